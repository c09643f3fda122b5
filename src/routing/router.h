// The layer's router: holds the router projection and the routing parameters that come
// with the weights (W_gate, its bias, DeepSeek's correction bias) and dispatches to the
// implementation for its device: routing.h on the CPU, routing_cuda.h on a CUDA device.
//
// NOTE: on a CUDA device, bad logit values (NaN, +inf, an all -inf row under a softmax) do
// not throw in route(): the kernel records the first one in a device flag owned by the
// router, and check_errors() reports it. On the CPU, route() throws right away.
#pragma once

#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe {

class Router {
 public:
  Router(const MoeConfig& config, Device device);

  /// Copies the router tensors the source has (checked against the config: a DeepSeek-V3
  /// layer with has_correction_bias needs the bias, a layer with has_router_bias needs it).
  void load(WeightSource& source);
  bool has_weight() const { return w_gate_.defined(); }

  /// logits f32 [T, E] = x W_gate^T (+ bias). Needs the router weight.
  void compute_logits(const TensorView& x, const TensorView& logits, void* stream);
  /// ids/weights from logits.
  void route(const TensorView& logits, const TensorView& topk_ids, const TensorView& topk_weights,
             void* stream);

  /// Throws moe::Error naming the token and expert of the first bad logit that route() met
  /// on the device since the last call, and clears the record. Synchronises the device: for
  /// tests and debug paths, never the forward path. A no-op on the CPU.
  void check_errors();

 private:
  MoeConfig config_;
  Device device_;
  Tensor w_gate_;           // [E, H] as loaded (bf16 or f32)
  Tensor router_bias_;      // f32 [E]
  Tensor correction_bias_;  // f32 [E]
  Tensor error_flag_;       // i32 [1] on a CUDA device: route_cuda's error flag
};

}  // namespace moe
