// The grouped backend's non-GEMM steps, all on the device with sizes read from device memory:
//   plan      : (token, k) pairs -> rows grouped by expert: offsets, row -> token, row weight,
//               pair -> row; shared-expert groups appended (one row per token each)
//   gather    : X_perm[row] = x[row_token[row]]; with 1x128 scales also
//               scales_t[g][row] = scales[row_token[row]][g] (the GEMM's group-major layout)
//   finalize  : out[t] = (accumulate ? out[t] : 0) + sum_k Y[pair_row[t, k]] + sum_s Y[shared]
//               (out in act_dtype, or f32 for expert parallelism's partial sums)
//               in fp32, in k order then shared groups: the same bits run after run.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "moe/dtype.h"

namespace moe::grouped {

struct PlanParams {
  const int32_t* topk_ids = nullptr;    // [T, k] global expert ids
  const float* topk_weights = nullptr;  // [T, k]
  int num_tokens = 0;
  int top_k = 0;
  int expert_begin = 0;       // first global expert id of this rank
  int num_local_experts = 0;  // routed groups
  int num_shared_groups = 0;  // appended groups, every token once each, weight 1
  bool with_routed = true;
  bool with_shared = false;
  int32_t* expert_offsets = nullptr;  // out [G + 1], G = local + shared groups
  int32_t* row_token = nullptr;       // out [rows]
  float* row_weight = nullptr;        // out [rows]
  int32_t* pair_row = nullptr;        // out [T, k]: row of the pair, -1 when not on this rank
  // Scratch of the multi-block plan, kPlanScratchInts ints (null: one block always): per
  // block, its routed pairs per group (blocks are capped so that blocks x groups fit).
  int32_t* block_counts = nullptr;
};

inline constexpr int kPlanScratchInts = 32 * 1024;

/// Up to kPlanOneBlockPairs (token, k) pairs (or without scratch): one block of 1024
/// threads. More: two grid-wide launches -- each block counts its slice of the pairs per
/// group, then each block derives every group's offset and its own first row in each group
/// from all blocks' counts and places its pairs (a 131,072-pair prefill on one block took
/// ~280 us, one shared-memory atomic per pair on a few words). Rows of an expert are
/// contiguous; their order inside the expert is not fixed (atomics), which changes no value:
/// every row is computed independently.
/// NOTE: 1024, measured on the H100 (CUPTI timeline, bench/NOTES.md thirteenth session): one
/// block took 10.6 us for the 4,096 pairs of 512 tokens (Qwen3-30B-A3B, DeepSeek-V3) and
/// 2.4 us for 8.
inline constexpr int kPlanOneBlockPairs = 1024;
void launch_plan(const PlanParams& p, cudaStream_t stream);

struct GatherParams {
  const void* x = nullptr;  // [T, H]
  void* x_perm = nullptr;   // [rows, H]
  const int32_t* row_token = nullptr;
  const int32_t* total_rows = nullptr;  // device: expert_offsets[G]
  int max_rows = 0;                     // launch bound
  int hidden = 0;
  const float* scales = nullptr;  // optional f32 [T, scale_groups] (token-major)
  float* scales_t = nullptr;      // f32 [scale_groups, scales_ld] (group-major)
  int scale_groups = 0;
  int64_t scales_ld = 0;
  // Trigger the next kernel at the start instead of after griddepcontrol.wait: only when it
  // does not read the plan's outputs before its own wait
  // (GroupedGemmParams::offsets_from_pairs).
  bool dependents_at_start = false;
  // The scales written by transpose_scales_kernel after the copy (gather_scales_by_token: many
  // rows) instead of a 4-byte store per row and group in it; needs max_rows scales_t rows. The
  // transposition reads the plan before its wait: dependents_at_start is then ignored.
  bool transpose_scales = false;
};
/// dtype: x's element type (any width whose rows are 16-byte multiples).
void launch_gather(const GatherParams& p, DType dtype, cudaStream_t stream);

/// e4m3 input quantized and scattered in one pass (instead of quantize_input's kernel, then the
/// gather): each token's act_dtype row, quantized bit for bit as quantize_input would, goes to
/// every row the plan gave the token -- its routed pairs' (pair_row >= 0) and, with_shared, its
/// row in each shared group. Block scaling: its 1x128 groups as quant::launch_fp8_quantize_1x128
/// does (s = max(amax, 1e-4) / 448, e4m3(x / s)), codes into x_perm, scales into scales_t
/// [group][row]. Per tensor (static_scale): e4m3(x / *static_scale) as
/// quant::launch_fp8_quantize_per_tensor does, codes only.
struct QuantizeScatterParams {
  const void* x = nullptr;  // [T, H] act_dtype (bf16 / f16), contiguous
  int num_tokens = 0;
  int hidden = 0;  // a multiple of 16
  int top_k = 0;
  const int32_t* pair_row = nullptr;        // [T, k] (plan)
  const int32_t* expert_offsets = nullptr;  // [G + 1] (plan)
  int num_local_experts = 0;                // shared group s starts at offsets[local + s]
  int num_shared_groups = 0;
  bool with_shared = false;
  uint8_t* x_perm = nullptr;  // [rows, H] e4m3
  float* scales_t = nullptr;  // f32 [ceil(H / 128), scales_ld]
  int64_t scales_ld = 0;
  bool dependents_at_start = false;  // as GatherParams::dependents_at_start
  // From this many tokens on, a block quantizes two tokens a round (their loads together).
  int scatter_pair_from = 1 << 30;
  // With scatter_pair_from: a block takes the two tokens' whole rows (a warp two 1x128 groups,
  // 16-byte loads, 256-byte row stores) instead of four groups of them.
  bool whole_rows = false;
  // Per-tensor scaling: the device f32 [1] input scale (a weight of the layer, set at load, so
  // read before griddepcontrol.wait); scales_t is then not written (may be null).
  const float* static_scale = nullptr;
  // Block scaling with whole_rows: f32 [T, ceil(H / 128)] (token-major). The rows kernel writes
  // each token's scales here once, and launch_transpose_scales then writes scales_t row by row
  // (a warp's stores one run of a group's rows) -- instead of a 4-byte store per row and group
  // to lines far apart (k of them a token: 29 MB in 8.3M stores at DeepSeek-V3 16384, 28% of
  // the kernel's time; bench/NOTES.md, twenty-sixth session). Needs row_token and max_rows.
  float* scales_tok = nullptr;
  const int32_t* row_token = nullptr;  // [R] (plan)
  int max_rows = 0;                    // a bound on the plan's rows (the transposition's grid)
};
/// quantize_scatter, then (scales_tok) launch_transpose_scales.
void launch_quantize_scatter(const QuantizeScatterParams& p, DType dtype, cudaStream_t stream);

/// 1x128 scales of `rows` rows of `hidden` features: one store per row and group where the
/// kernel that writes the rows writes them too.
inline int64_t scale_stores(int64_t rows, int64_t hidden) { return rows * ((hidden + 127) / 128); }

/// Whether fp8_block's quantize_scatter of up to `rows` rows of `hidden` features writes its
/// scales token-major and transposes them (QuantizeScatterParams::scales_tok): from 2^19 scale
/// stores. Below, the second kernel costs more than the scattered stores it saves (twenty-sixth
/// session: those were 7 us at Qwen3-30B-A3B's 4096 tokens, 0.5M stores; 185 us at
/// DeepSeek-V3's 16384, 8.3M).
inline bool scales_by_token(int64_t rows, int64_t hidden) {
  return scale_stores(rows, hidden) >= (int64_t{1} << 19);
}

/// Whether the gather of up to `rows` e4m3 rows of `hidden` features leaves their 1x128 scales
/// to the transposition (GatherParams::transpose_scales): from 3 x 2^20 scale stores. The
/// gather's own stores cost less than quantize_scatter's (a block per row, its row's groups
/// together). NOTE: measured on the H100 (bench/NOTES.md, twenty-seventh session; timelines,
/// the gather then FC1's start): DeepSeek-V3 16384 tokens (8.3M stores) -60 us, 8192 (4.1M)
/// -22 us; Qwen3-30B-A3B 16384 (2.1M) -1.3 us, and at 4096 (0.5M) the layer +3.5 us.
inline bool gather_scales_by_token(int64_t rows, int64_t hidden) {
  return scale_stores(rows, hidden) >= (int64_t{3} << 20);
}

/// scales_t[g][r] = scales[row_token[r]][g] for the plan's rows r < *total_rows: a thread per
/// row and 8 groups, so that each group's stores from a warp are 32 consecutive rows (whole
/// sectors). Reads row_token and *total_rows before griddepcontrol.wait: the kernel before it
/// must trigger its dependents only after its own wait on the plan.
struct TransposeScalesParams {
  const float* scales = nullptr;        // [T, groups] token-major
  const int32_t* row_token = nullptr;   // [R] (plan)
  const int32_t* total_rows = nullptr;  // device count (plan: expert_offsets[G])
  int max_rows = 0;                     // a bound on *total_rows (the grid)
  int groups = 0;
  float* scales_t = nullptr;  // f32 [groups, scales_ld]
  int64_t scales_ld = 0;
};
void launch_transpose_scales(const TransposeScalesParams& p, cudaStream_t stream);

struct FinalizeParams {
  const void* y = nullptr;                  // [rows, H]
  void* out = nullptr;                      // [T, H]
  const int32_t* pair_row = nullptr;        // [T, k]
  const int32_t* expert_offsets = nullptr;  // [G + 1]
  int num_tokens = 0;
  int top_k = 0;
  int hidden = 0;
  int num_local_experts = 0;
  int num_shared_groups = 0;
  bool with_routed = true;
  bool with_shared = false;
  bool accumulate = false;
  // y's layout: 0, rows of H; else FC2's blocked layout with this many block rows
  // (grouped::y_block_offset, GroupedGemmParams::out_scales_ld).
  int64_t y_block_rows = 0;
};
void launch_finalize(const FinalizeParams& p, DType dtype, cudaStream_t stream);
/// finalize with out in `out_dtype`: dtype (rounded once) or f32 (expert parallelism's
/// partial sums, not rounded; accumulate reads f32 too).
void launch_finalize(const FinalizeParams& p, DType dtype, DType out_dtype, cudaStream_t stream);

}  // namespace moe::grouped
