// The `reference` backend: the CPU oracle every GPU kernel is checked against.
//
// It keeps every weight in checkpoint format (its quant method, reference_quant_method.h)
// and computes each expert in float64 from weights dequantized exactly, emulating the
// activation quantization a GPU kernel of the same mode performs:
//   x_t      = the (quantized) input row, dequantized to double
//   g, u     = W1 x_t (+ b_gate), W3 x_t (+ b_up)                 float64 accumulation
//   h        = silu(g) * u                                         (SwiGLU)
//            | (clamp(u, -l, l) + 1) * min(g, l) * sigmoid(a * min(g, l))  (SwiGLU-OAI)
//   h'       = the intermediate quantized as the GPU does before FC2, dequantized
//   y        = W2 h' (+ b_down)
//   out[t]   = act_dtype( sum_k w[t, k] * y_k  (in k order, local experts only)
//                         + shared MLP(x_t)    (with_shared)
//                         + out[t]             (accumulate) )
// Expert parallelism: rank r of ep_size owns the contiguous experts
// [r * E / ep_size, (r + 1) * E / ep_size) and skips the others; every rank that runs the
// shared MLP loads it.
// Deterministic: each dot product has a fixed summation order, so the output bits do not
// depend on the thread count or on scheduling.
#pragma once

#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "backends/reference/reference_quant_method.h"

namespace moe {

class ReferenceBackend final : public MoEBackend {
 public:
  ReferenceBackend(const MoeConfig& config, const Mapping& mapping);

  /// Runs on any machine, every quant mode and activation; needs a valid config and an
  /// ep_size that divides num_experts.
  static Capability can_implement(const MoeConfig& config, const Mapping& mapping,
                                  const DeviceInfo& device);

  std::string_view name() const override { return "reference"; }
  SchedulerKind scheduler_kind() const override { return SchedulerKind::kExternalComm; }
  bool supports_load_balancer() const override { return true; }
  Device device() const override { return Device::cpu(); }

  void create_weights() override;
  void load_weights(WeightSource& source, LoadMode mode) override;
  void post_load_weights() override;
  void process_weights_after_loading() override;
  void pre_reload_weights() override;
  void register_eplb_tensors(ExpertTensorRegistry& registry) override;

  size_t workspace_bytes(int max_tokens) const override;
  QuantizedInput quantize_input(const TensorView& x, void* stream) override;
  void run_moe(const RunMoeArgs& args, void* stream) override;

  /// The global id of this rank's first expert, and how many it owns.
  int first_local_expert() const { return first_local_expert_; }
  int num_local_experts() const { return num_local_experts_; }

 private:
  enum class State { kConstructed, kCreated, kLoaded, kReady };

  /// Validates the loaded weights and sets the static activation scales (both post-load
  /// hooks run this; it is idempotent).
  void finish_loading();
  /// The routed experts and the shared MLP this rank runs, in that order.
  std::vector<const RefExpertWeights*> experts_run() const;
  /// Computes out rows [t0, t1) (see run_moe).
  void run_chunk(const RunMoeArgs& args, int64_t t0, int64_t t1) const;

  MoeConfig config_;
  Mapping mapping_;
  int first_local_expert_ = 0;
  int num_local_experts_ = 0;
  std::unique_ptr<ReferenceQuantMethod> method_;
  std::vector<RefExpertWeights> experts_;  // local experts, by local index
  std::optional<RefExpertWeights> shared_;
  RefInputBuffers input_buffers_;
  State state_ = State::kConstructed;
};

/// The registry entry: name "reference", ReferenceBackend::can_implement, its constructor.
const BackendEntry& reference_backend_entry();

}  // namespace moe
