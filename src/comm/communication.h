// The Communication contract (DESIGN.md "Communication and scale-out"): moves tokens to the
// ranks that own their experts and the results back.
//
// Strategies (comm_factory.cc lists them in the order "auto" tries):
//   local                     one rank, nothing moves (this file's LocalCommunication)
//   one_sided                 each rank writes its tokens straight into the owner's receive
//                             buffer (NCCL symmetric memory on GPUs, MPI RMA on the CPU)
//   alltoall                  counts exchange, then only the tokens each rank needs, once per
//                             destination rank (grouped ncclSend/ncclRecv, MPI_Ialltoallv)
//   allgather_reducescatter   every rank gets every token; partial sums reduce-scattered back
// Each runs over NCCL when the backend's tensors are on a GPU (src/comm/nccl/) and over MPI
// when they are on the host (src/comm/mpi/).
//
// Lifecycle: the factory asks is_platform_supported and is_workload_feasible (no allocation,
// no communication), then calls initialize() on the chosen one -- collective: every rank of
// the EP group calls it in the same order -- and the scheduler runs, per forward,
//   agree_num_chunks -> per chunk: prepare_dispatch -> dispatch -> run_moe -> combine.
// Every rank runs every step of every chunk, also with zero tokens (lockstep).
//
// Expert ownership: rank r owns the contiguous experts [r * E / ep, (r + 1) * E / ep).
// run_moe computes on each received token the sum over ITS local experts of w * expert(x)
// into dispatch's expert_out, which the cross-rank strategies allocate wide (once, at
// initialize): f64 on the host (MPI), f32 on GPUs (NCCL) -- partial sums are never rounded
// to act_dtype. combine sums those partial results over ranks in a fixed order (ascending
// rank), and rounds once to out's dtype (act_dtype; the host strategies also accept an f64
// out, left unrounded, to which the scheduler adds the shared MLP before rounding): the
// routing weights are applied once (by the backend), and the result does not depend on
// timing. `local` hands back the layer output itself (act_dtype) and combine is a no-op.
//
// Failure: a peer that dies or stalls makes every waiting step throw moe::Error within
// comm_timeout_seconds() instead of hanging; after that the strategy refuses further work.
#pragma once

#include <cstdint>
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
  TensorView expert_out;  // [T_recv, H]: f64 (MPI) / f32 (NCCL) partials, act_dtype (local)
};

class Communication {
 public:
  virtual ~Communication() = default;
  virtual std::string_view name() const = 0;
  virtual Capability is_platform_supported() const = 0;
  virtual Capability is_workload_feasible(const MoeConfig& config, int max_tokens) const = 0;
  /// Can dispatch carry the backend's quantized input (fp8 + scales) instead of bf16?
  virtual bool supports_post_quant_dispatch() const = 0;

  /// Collective set-up after the factory chose this strategy: communicators, buffers,
  /// windows. Every rank of the EP group calls it once, in the same order.
  virtual void initialize() {}
  /// Tokens a rank may bring to one chunk, so that no rank ever receives more than
  /// max_num_tokens (the size every backend's workspace has): max_num_tokens / ep_size for
  /// the cross-rank strategies.
  virtual int64_t chunk_capacity(int64_t max_num_tokens) const { return max_num_tokens; }
  /// The number of chunks every rank runs in this forward: the maximum of the ranks'
  /// `local_chunks` (ranks with fewer tokens run zero-token chunks). Collective.
  virtual int64_t agree_num_chunks(int64_t local_chunks, void* stream) { return local_chunks; }

  /// Counts and statistics needed before dispatch.
  virtual void prepare_dispatch(const RoutingView& routing, void* stream) = 0;
  /// Sends tokens to their experts' ranks. `out` [T, H] is the layer output of this rank's
  /// tokens; a strategy may hand it back as expert_out when nothing moves.
  virtual DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing,
                                  const TensorView& out, void* stream) = 0;
  /// Brings expert_out back to the tokens' ranks, summed in a fixed order and rounded once,
  /// into out [T, H] (act_dtype; f64 on the host strategies keeps the sum unrounded).
  virtual void combine(const TensorView& expert_out, const TensorView& out, void* stream) = 0;
};

/// How long a rank waits for its peers in any exchange before it fails with moe::Error:
/// set_comm_timeout_seconds(), else the MOE_COMM_TIMEOUT_S environment variable, else 300 s.
double comm_timeout_seconds();
/// Overrides the timeout for exchanges that start afterwards (> 0).
void set_comm_timeout_seconds(double seconds);

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
