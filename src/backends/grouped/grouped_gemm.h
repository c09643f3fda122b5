// Grouped GEMM on Hopper for the MoE experts: one persistent launch computes, for every local
// expert e with rows [offsets[e], offsets[e+1]) of the permuted activations X,
//   D_e = W_e X_e^T       W: [E, n, k] K-major (weights), X: [rows, k] K-major (tokens)
// with the weights on wgmma's M side and the tokens on its N side (the "swap-AB" form: a
// decode step with 1 token per expert still fills the 64-row tensor-core tile with weights).
// Block-scaled prefill tiles (GemmConfig::tokens_on_m) turn it around: tokens on M, weights on
// N, as DeepGEMM does, which makes the per-K-block promotion cheaper (one scale per row pair).
// Problem sizes are read from device memory; nothing here synchronises with the host.
//
// Operands (GemmTypes): bf16 x bf16 or f16 x f16 (Scaling::kNone), or e4m3 x e4m3 with
//   kPerTensor  D = (W_e X_e^T) * w_scales[e] * act_scale   (FC1: [e][0] gate rows, [e][1] up)
//   kBlock      D = sum over 128-wide K blocks kb of (W X^T)_kb * wscale(e, row, kb) *
//               xscale(row of X, kb): weight scales w_scales (FC1 [E, ceil(n/128), 2, KB]:
//               gate / up of each 128-row tile; FC2 [E, ceil(n/128), KB]), X's scales
//               f32 [KB, ld] through xs_map (make_scales_map, tma_map.h); block_n <= 192.
//   Per-tensor on the tokens-on-M tiles (prefill) accumulates without promotion, alpha at the
//   unit's end. The per-tensor FC1 writes its output in e4m3 itself: e4m3(act / *out_scale)
//   (on the tokens-on-M tiles a unit is then two adjacent weight tiles); the block-scaled FC1
//   on the tokens-on-M tiles and on the tokens-on-N ones up to kMaxQuantOnNBlockN tokens may too
//   (out e4m3): 1x128 groups of the bf16 act, scales to out_scales, bit for bit
//   quant::launch_fp8_quantize_1x128 (a work unit is then two adjacent weight tiles).
//
// Epilogues:
//   kSwiGLU / kSwiGLUOAI (FC1): W rows are gate/up interleaved in blocks of 8
//     (rows 16b..16b+7 = gate 8b..8b+7, rows 16b+8..16b+15 = up 8b..8b+7), so each thread
//     holds matching gate and up values; writes act(gate, up) -> out [rows, n/2].
//   kRoutingWeight (FC2): out [rows, n] = (D + bias) * row_weight[row].
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "backends/grouped/gemm_heuristic.h"
#include "moe/dtype.h"

namespace moe::grouped {

enum class Epilogue : uint8_t { kSwiGLU, kSwiGLUOAI, kRoutingWeight };
enum class Scaling : uint8_t { kNone, kPerTensor, kBlock };

/// Operand and output element types and the scaling of one GEMM.
struct GemmTypes {
  DType in = DType::kBF16;   // W and X: kBF16, kF16 or kE4M3
  DType out = DType::kBF16;  // kBF16 / kF16, or kE4M3 (FC1: per-tensor, or block-scaled)
  Scaling scaling = Scaling::kNone;
};

/// Widest token tile of block scaling (it keeps two accumulator sets in registers: 2 x 96
/// at 192, within the consumers' 232).
inline constexpr int kMaxBlockScaledN = 192;

struct GroupedGemmParams {
  int num_experts = 0;                      // local experts (groups)
  int n = 0;                                // weight rows per expert (2I for FC1, H for FC2)
  int k = 0;                                // reduction size
  const int32_t* expert_offsets = nullptr;  // [num_experts + 1] rows of X per expert (device)
  void* out = nullptr;                      // FC1: [rows, n/2]; FC2: [rows, n]; act dtype
  const float* row_weights = nullptr;       // FC2: [rows] routing weight per row (device)
  const float* bias = nullptr;              // [num_experts, n] in W's row order, or nullptr
  const float* w_scales = nullptr;          // e4m3: weight scales (layouts above)
  const float* act_scale = nullptr;         // kPerTensor: X's scale, device f32 [1]
  const float* out_scale = nullptr;         // kPerTensor FC1: the e4m3 output's scale [1]
  float* out_scales = nullptr;              // kBlock FC1 with e4m3 output: [n/256 groups, ld]
  int64_t out_scales_ld = 0;                //   (the 1x128 groups' scales);
                                            //   FC2: y's block rows (y_block_offset), or 0
  float oai_alpha = 1.702f;
  float oai_limit = 7.0f;
  // expert_offsets and row_weights were written at least two kernels earlier in the stream,
  // and every kernel in between triggers its dependents only after its own
  // griddepcontrol.wait (the grouped backend: the plan, then the gather and FC1 or the 1x128
  // quantization): each CTA then reads the offsets and sends its first stages' weight loads
  // before griddepcontrol.wait, under the previous kernel's tail (decode; the tokens-on-M
  // tiles launch after the previous kernel by default, grouped_pdl_on_m). Single-CTA variants
  // only (no clusters).
  bool offsets_before_wait = false;
  // Decode (offsets_before_wait, tokens-on-N tiles): each CTA derives the offsets itself from
  // the router's (token, k) pairs -- per routed group its pairs, then every token once per
  // shared group, the plan's offsets exactly -- instead of reading them, so that it does not
  // depend on the plan before its griddepcontrol.wait and the kernel before it may trigger it
  // at its start (quantize_scatter / gather dependents_at_start): the weight stream starts
  // under the plan. expert_offsets then points at the router's topk ids [num_tokens, top_k]
  // (global expert ids), complete whenever this kernel runs (the plan triggers its
  // dependents only after its own wait). The fields fill the struct's tail padding: a larger
  // struct moved the tokens-on-M kernels' code (FC2's 3,328 -> 3,320 instructions, Qwen3
  // 4096 tokens +0.6% on the H100).
  bool offsets_from_pairs = false;
  uint8_t top_k = 0;
  uint8_t shared_groups = 0;  // the last groups; num_tokens rows each
  int16_t num_tokens = 0;
  int16_t expert_begin = 0;  // routed group g is global expert expert_begin + g
};

#ifdef __CUDACC__
#define MOE_Y_HD __host__ __device__ __forceinline__
#else
#define MOE_Y_HD inline
#endif

/// y's blocked layout, written by FC2 on the 128-token tokens-on-M tile when
/// GroupedGemmParams::out_scales_ld = block_rows > 0 (its unit output staged whole,
/// GemmConfig::unit_out) and read by the finalize (FinalizeParams::y_block_rows):
/// [ceil(n / 256)][block_rows][256], with the 16-byte pieces of row r's 256 features permuted
/// (piece q at q ^ (r % 8)). A unit's rows (one expert's token tile against a weight-tile
/// pair) are then one contiguous run, one bulk copy from its staging, where the permutation
/// puts stmatrix's 8 rows on distinct banks. The element offset of (row, c), c a multiple of 8.
MOE_Y_HD int64_t y_block_offset(int64_t row, int c, int64_t block_rows) {
  return ((c / 256) * block_rows + row) * 256 + (((c % 256) / 8) ^ static_cast<int>(row & 7)) * 8;
}

/// A forced `config` (MOE_GROUPED_BLOCK_N) under MOE_GROUPED_TOKENS_ON_M=1: the tokens-on-M
/// tile where the block-scaled tile has 128 tokens or more (grouped_gemm.cu); else unchanged.
GemmConfig with_tokens_on_m_setting(GemmConfig config, Scaling scaling);

/// Variants compiled into the library, by block_n (kBlock has its own list, up to 192).
bool is_supported_block_n(int block_n, Scaling scaling = Scaling::kNone);

/// The compiled variant for block_n (its pipeline depth).
GemmConfig gemm_config_for_block_n(int block_n);

/// Shared memory a variant needs (bytes, dynamic).
int gemm_smem_bytes(GemmConfig config, int num_experts);

/// The variant for a problem among the compiled ones (gemm_heuristic.h).
GemmConfig choose_gemm_config(int64_t total_rows, int num_experts,
                              Scaling scaling = Scaling::kNone);

/// Launches the persistent grouped GEMM. w_map: 3D tensor map over W [E, n, k] with box
/// {128 bytes, 128, 1}; x_map: 2D over X [rows_capacity, k] with box {128 bytes, block_n};
/// both 128-byte swizzled (see tma_map.h); xs_map (kBlock only, else nullptr): X's scales.
void launch_grouped_gemm(const GroupedGemmParams& params, const CUtensorMap& w_map,
                         const CUtensorMap& x_map, const CUtensorMap* xs_map, GemmConfig config,
                         Epilogue epilogue, GemmTypes types, int num_sms, cudaStream_t stream);

/// 16-bit operands and output of `dtype` (kBF16 or kF16).
void launch_grouped_gemm(const GroupedGemmParams& params, const CUtensorMap& w_map,
                         const CUtensorMap& x_map, GemmConfig config, Epilogue epilogue,
                         DType dtype, int num_sms, cudaStream_t stream);

}  // namespace moe::grouped
