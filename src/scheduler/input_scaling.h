// Llama-4 applies the routing weight to the expert's input: x_scaled[t] = x[t] * w[t, 0]
// (k == 1), rounded to the activation type as the model does in bf16.
#pragma once

#include "moe/tensor.h"

namespace moe {

/// out[t, :] = act(x[t, :] * weights[t, 0]); then weights[t, 0] = 1. x, out: bf16/f16 [T, H];
/// weights f32 [T, 1]. Host tensors.
void apply_weight_on_input_cpu(const TensorView& x, const TensorView& topk_weights,
                               const TensorView& out);
/// The same on the GPU (built with CUDA only), on `stream`.
void apply_weight_on_input_cuda(const TensorView& x, const TensorView& topk_weights,
                                const TensorView& out, void* stream);
/// Dispatches on x's device.
void apply_weight_on_input(const TensorView& x, const TensorView& topk_weights,
                           const TensorView& out, void* stream);

}  // namespace moe
