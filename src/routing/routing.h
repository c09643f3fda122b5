// Routing on the CPU: logits -> (expert ids, weights), bit for bit the models' definitions
// (../shared/facts/models.md), and the router projection. This is the oracle for the
// routing kernels.
//
// Shapes: logits f32 [T, E]; topk_ids i32 [T, k]; topk_weights f32 [T, k].
// All router math is in fp32, in the order written in routing.cc.
//
// NOTE (ties): wherever two candidates compare equal -- expert scores, group scores --
// the lower index wins. Within a token, the k selected experts are listed in order of
// decreasing selection score (ties: lower index first).
#pragma once

#include "moe/config.h"
#include "moe/tensor.h"

namespace moe {

/// Routes T tokens. `correction_bias` f32 [E] is required for kDeepSeekV3 when
/// routing.has_correction_bias and must be empty otherwise. Throws moe::Error for NaN
/// logits (naming token and expert), bad shapes, k > E, or group settings that do not
/// divide E.
void route_cpu(const RoutingConfig& routing, int top_k, const TensorView& logits,
               const TensorView& correction_bias, const TensorView& topk_ids,
               const TensorView& topk_weights);

/// The checks of routing's arguments that every device shares: shapes and dtypes of logits,
/// ids, weights and correction bias, the routing parameters, and whether a correction bias
/// is expected. Placement, values and a device's own limits are its router's to check.
void check_routing_args(const RoutingConfig& routing, int top_k, const TensorView& logits,
                        const TensorView& correction_bias, const TensorView& topk_ids,
                        const TensorView& topk_weights);

/// logits[t, e] = sum_h x[t, h] * w_gate[e, h] (+ bias[e]), accumulated in fp32 in order of
/// h. x: bf16/f16/f32 [T, H]; w_gate: bf16/f32 [E, H]; bias: f32/bf16 [E] or empty;
/// logits: f32 [T, E].
void router_logits_cpu(const TensorView& x, const TensorView& w_gate, const TensorView& bias,
                       const TensorView& logits);

}  // namespace moe
