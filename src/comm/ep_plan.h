// The host-side plan of an expert-parallel exchange: pure functions of the routing, shared by
// the MPI strategies (which run them) and the tests of the NCCL strategies (which check the
// device's plan against them).
//
//   ExpertPartition     rank r owns experts [r * E / ep, (r + 1) * E / ep)
//   PayloadLayout       what one dispatched token carries: the QuantizedInput's data row,
//                       its scales row (per-token scales) and its k ids and weights
//   plan_send           the tokens each rank needs: a token goes once to every rank that
//                       owns at least one of its experts, rows grouped by destination rank
//                       in ascending order, tokens ascending within a destination
//   gather_rows         dst[i] = src[rows[i]]     (packing a send buffer)
//   sum_rows            out[t] = round(sum over i with token_of_row[i] == t, in i order,
//                       of partial[i]) in double, rounded once to out's dtype; tokens that
//                       no row names get 0
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "moe/config.h"
#include "moe/tensor.h"

namespace moe {

/// Which rank owns which experts (contiguous, equal ranges).
struct ExpertPartition {
  int num_experts = 0;
  int ep_size = 1;
  int experts_per_rank() const { return num_experts / ep_size; }
  int owner(int expert) const { return expert / experts_per_rank(); }
  int first_expert(int rank) const { return rank * experts_per_rank(); }
  /// An expert that `rank` does not own (for padding rows), or -1 when ep_size == 1.
  int foreign_expert(int rank) const {
    return ep_size == 1 ? -1 : first_expert((rank + 1) % ep_size);
  }
};

/// The bytes one token carries through dispatch.
struct PayloadLayout {
  DType data_dtype = DType::kBF16;
  int64_t data_cols = 0;        // H
  size_t data_row_bytes = 0;    // bytes of one data row
  bool per_row_scales = false;  // scales [T, S], sent with the token
  DType scale_dtype = DType::kF32;
  int64_t scale_cols = 0;      // S
  size_t scale_row_bytes = 0;  // 0 without per-row scales
  int top_k = 0;
};

/// The layout of `x` (data [T, H] contiguous; scales empty, [T, S] contiguous, or a
/// per-tensor value that is not sent) for top-k routing. Throws moe::Error naming the
/// tensor that does not fit.
PayloadLayout payload_layout(const QuantizedInput& x, int top_k);

/// The tokens each rank receives from this one.
struct SendPlan {
  std::vector<int64_t> counts;        // [ep] tokens sent to each rank
  std::vector<int64_t> offsets;       // [ep + 1] first send row of each rank
  std::vector<int64_t> token_of_row;  // [offsets[ep]] local token of each send row
  int64_t num_rows() const { return offsets.empty() ? 0 : offsets.back(); }
};

/// The plan for ids i32 [T, k] (host, contiguous). Throws moe::Error naming the first id
/// outside [0, E).
SendPlan plan_send(const TensorView& topk_ids, const ExpertPartition& partition);

/// dst rows i = src rows rows[i], for any byte-aligned dtype; dst and src contiguous 2-D
/// (or 1-D) host tensors with the same row size.
void gather_rows(const TensorView& src, std::span<const int64_t> rows, const TensorView& dst);

/// Packs a dispatch's send rows in plan order into host buffers of at least plan.num_rows()
/// rows: the payload data, its per-row scales (when the layout has them), the routing ids and
/// weights.
void pack_send_rows(const QuantizedInput& x, const TensorView& topk_ids,
                    const TensorView& topk_weights, const PayloadLayout& layout,
                    const SendPlan& plan, int64_t top_k, void* data, void* scales, void* ids,
                    void* weights);

/// out [T, H] = per token, the sum in row order of the rows of partial [R, H] that name it
/// (token_of_row [R]), computed in double and rounded once to out's dtype (bf16, f16 or
/// f32; f64 keeps the sum unrounded); tokens without rows get 0. partial may be bf16, f16,
/// f32 or f64 (the host strategies' wide partial sums).
void sum_rows(const TensorView& partial, std::span<const int64_t> token_of_row,
              const TensorView& out);

/// The largest data row and per-token scales row a dispatch of `config`'s layer carries
/// (exchange buffers are sized with these): act_dtype [H], and up to one f32 per 16 elements.
size_t max_data_row_bytes(const MoeConfig& config);
/// The dtype of the partial sums run_moe writes under expert parallelism, so that they
/// travel unrounded and combine rounds once: f64 on the host (MPI), f32 on GPUs (NCCL).
inline DType partial_sum_dtype(bool on_host) { return on_host ? DType::kF64 : DType::kF32; }
size_t max_scale_row_bytes(const MoeConfig& config);

/// Whether the backend's quantized input may be dispatched as it is: not when its scale is
/// one per-tensor value that differs by rank (fp8_per_tensor: the max of the static input
/// scales of the experts the rank runs); such inputs travel unquantized.
bool post_quant_dispatch_ok(const MoeConfig& config);

/// The checks every cross-rank strategy makes of a layer: ep_size divides the experts, and
/// max_num_tokens leaves each rank at least one token per chunk.
Capability ep_workload_feasible(const MoeConfig& config, const Mapping& mapping, int max_tokens);

/// Exclusive prefix sums: [n] -> [n + 1].
std::vector<int64_t> exclusive_prefix(std::span<const int64_t> counts);

}  // namespace moe
