// The Communication contract (DESIGN.md "Communication and scale-out"): moves tokens to the
// ranks that own their experts and the results back. Strategies: local (this file's
// LocalCommunication), allgather_reducescatter, alltoall, one_sided (NCCL / MPI, later).
#pragma once

#include <memory>
#include <string_view>

#include "backends/backend.h"
#include "moe/config.h"
#include "moe/tensor.h"

namespace moe {

struct RoutingView {
  TensorView topk_ids;      // i32 [T, k]
  TensorView topk_weights;  // f32 [T, k]
};

/// What a rank computes on after dispatch, and where run_moe writes.
struct DispatchResult {
  QuantizedInput x;       // [T_recv, H]
  RoutingView routing;    // [T_recv, k]
  TensorView expert_out;  // act_dtype [T_recv, H]
};

class Communication {
 public:
  virtual ~Communication() = default;
  virtual std::string_view name() const = 0;
  virtual Capability is_platform_supported() const = 0;
  virtual Capability is_workload_feasible(const MoeConfig& config, int max_tokens) const = 0;
  /// Can dispatch carry the backend's quantized input (fp8 + scales) instead of bf16?
  virtual bool supports_post_quant_dispatch() const = 0;
  /// Counts and statistics needed before dispatch.
  virtual void prepare_dispatch(const RoutingView& routing, void* stream) = 0;
  /// Sends tokens to their experts' ranks. `out` [T, H] is the layer output of this rank's
  /// tokens; a strategy may hand it back as expert_out when nothing moves.
  virtual DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing,
                                  const TensorView& out, void* stream) = 0;
  /// Brings expert_out back to the tokens' ranks, summed, into out.
  virtual void combine(const TensorView& expert_out, const TensorView& out, void* stream) = 0;
};

/// One rank: nothing moves.
class LocalCommunication final : public Communication {
 public:
  explicit LocalCommunication(const Mapping& mapping) : mapping_(mapping) {}
  std::string_view name() const override { return "local"; }
  Capability is_platform_supported() const override;
  Capability is_workload_feasible(const MoeConfig& config, int max_tokens) const override;
  bool supports_post_quant_dispatch() const override { return true; }
  void prepare_dispatch(const RoutingView&, void*) override {}
  DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing,
                          const TensorView& out, void* stream) override;
  void combine(const TensorView& expert_out, const TensorView& out, void* stream) override;

 private:
  Mapping mapping_;
};

}  // namespace moe
