// The layer's router: holds the router projection and the routing parameters that come
// with the weights (W_gate, its bias, DeepSeek's correction bias) and dispatches to the
// implementation for the device (CPU here; CUDA kernels beside it later).
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

 private:
  MoeConfig config_;
  Device device_;
  Tensor w_gate_;           // [E, H] as loaded (bf16 or f32)
  Tensor router_bias_;      // f32 [E]
  Tensor correction_bias_;  // f32 [E]
};

}  // namespace moe
