// Device steps of the NCCL strategies that are not communication: the dispatch plan,
// packing rows by destination, the fixed-order sum of partial results, and padding rows.
// Sizes that depend on the routing are read from device memory (no host synchronisation).
//
//   plan_send    one block: ids [T, k] -> per destination rank d, the tokens with an expert
//                on d, ascending (the order of the CPU plan_send, ep_plan.h):
//                counts [ep], offsets [ep + 1], token_of_row [rows], row_of [T, ep]
//   gather_rows  dst[i] = src[src_row[i]] for i < *num_rows, up to four payload parts
//   sum_rows     out[t] = round(sum over d ascending with row_of[t, d] >= 0 of
//                partial[row_of[t, d]]), in fp32, rounded once to bf16/f16; partial is
//                act_dtype or (f32_partial) the strategies' f32 partial sums
//   round_rows   out[i] = round(in[i]): f32 [n] -> bf16/f16 [n]
//   pad_rows     ids of rows [valid_s, rows_per_block) of each block s set to an expert this
//                rank does not own, weights to 0: rows no backend computes
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "moe/dtype.h"

namespace moe::ep {

/// The most ranks the NCCL strategies support (masks of 64 bits, per-rank arrays by value).
inline constexpr int kMaxRanks = 64;

struct PlanSendParams {
  const int32_t* topk_ids = nullptr;  // [T, k] global expert ids; ids outside [0, E) ignored
  int num_tokens = 0;
  int top_k = 0;
  int experts_per_rank = 0;
  int ep_size = 1;
  uint64_t* dest_mask = nullptr;    // scratch [T]
  int32_t* counts = nullptr;        // out [ep]
  int32_t* offsets = nullptr;       // out [ep + 1]
  int32_t* token_of_row = nullptr;  // out [T * min(k, ep)]
  int32_t* row_of = nullptr;        // out [T, ep]: -1 when token t does not go to rank d
};
void launch_plan_send(const PlanSendParams& p, cudaStream_t stream);

/// One payload part moved row by row.
struct RowPart {
  const void* src = nullptr;
  void* dst = nullptr;
  size_t row_bytes = 0;  // 0: part absent
};

struct GatherRowsParams {
  RowPart parts[4];
  const int32_t* src_row = nullptr;   // [max_rows] source row of destination row i
  const int32_t* num_rows = nullptr;  // device: rows to copy
  int max_rows = 0;                   // launch bound
};
void launch_gather_rows(const GatherRowsParams& p, cudaStream_t stream);

struct SumRowsParams {
  const void* partial = nullptr;    // act [rows, H], or f32 with f32_partial
  bool f32_partial = false;         // the strategies' partial sums: f32, unrounded
  const int32_t* row_of = nullptr;  // [T, ep]
  void* out = nullptr;              // act [T, H]
  int num_tokens = 0;
  int ep_size = 1;
  int hidden = 0;
};
void launch_sum_rows(const SumRowsParams& p, DType dtype, cudaStream_t stream);

/// out (dtype bf16/f16, [n]) = in (f32 [n]) rounded once.
void launch_round_rows(const float* in, void* out, int64_t n, DType dtype, cudaStream_t stream);

struct PadRowsParams {
  int32_t* ids = nullptr;    // [num_blocks * rows_per_block, k]
  float* weights = nullptr;  // [num_blocks * rows_per_block, k]
  int top_k = 0;
  int rows_per_block = 0;
  int num_blocks = 0;
  int32_t foreign_expert = 0;
  int32_t valid[kMaxRanks] = {};  // rows of block s that hold tokens
};
void launch_pad_rows(const PadRowsParams& p, cudaStream_t stream);

}  // namespace moe::ep
