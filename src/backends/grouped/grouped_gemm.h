// Grouped GEMM on Hopper for the MoE experts: one persistent launch computes, for every local
// expert e with rows [offsets[e], offsets[e+1]) of the permuted activations X,
//   D_e = W_e X_e^T       W: [E, n, k] K-major (weights), X: [rows, k] K-major (tokens)
// with the weights on wgmma's M side and the tokens on its N side (the "swap-AB" form: a
// decode step with 1 token per expert still fills the 64-row tensor-core tile with weights).
// Problem sizes are read from device memory; nothing here synchronises with the host.
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

struct GroupedGemmParams {
  int num_experts = 0;                      // local experts (groups)
  int n = 0;                                // weight rows per expert (2I for FC1, H for FC2)
  int k = 0;                                // reduction size
  const int32_t* expert_offsets = nullptr;  // [num_experts + 1] rows of X per expert (device)
  void* out = nullptr;                      // FC1: [rows, n/2]; FC2: [rows, n]; act dtype
  const float* row_weights = nullptr;       // FC2: [rows] routing weight per row (device)
  const float* bias = nullptr;              // [num_experts, n] in W's row order, or nullptr
  float oai_alpha = 1.702f;
  float oai_limit = 7.0f;
};

/// Variants compiled into the library, by block_n.
bool is_supported_block_n(int block_n);

/// The compiled variant for block_n (its pipeline depth).
GemmConfig gemm_config_for_block_n(int block_n);

/// Shared memory a variant needs (bytes, dynamic).
int gemm_smem_bytes(GemmConfig config, int num_experts);

/// The variant for a problem among the compiled ones (gemm_heuristic.h).
GemmConfig choose_gemm_config(int64_t total_rows, int num_experts);

/// Launches the persistent grouped GEMM. w_map: 3D tensor map over W [E, n, k] with box
/// {64, 128, 1}; x_map: 2D over X [rows_capacity, k] with box {64, block_n}; both 128-byte
/// swizzled (see tma_map.h). dtype: kBF16 or kF16 (operands and output).
void launch_grouped_gemm(const GroupedGemmParams& params, const CUtensorMap& w_map,
                         const CUtensorMap& x_map, GemmConfig config, Epilogue epilogue,
                         DType dtype, int num_sms, cudaStream_t stream);

}  // namespace moe::grouped
