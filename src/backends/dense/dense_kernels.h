// The dense backend's two small kernels around its cuBLASLt GEMMs (dense_kernels.cu).
//
// Column spaces (E routed experts of intermediate size I, a shared MLP of size S >= 0):
//   FC1 output  f32 [rows, N1], N1 = 2 (E I + S): expert e's gate at [2eI, 2eI + I), its up
//               at [2eI + I, 2eI + 2I); the shared gate at [2EI, 2EI + S), up after it
//   intermediate      [rows, K2], K2 = E I + S: expert e at [eI, eI + I), shared at [EI, K2)
// A "segment" is one routed expert (0 <= seg < E) or the shared MLP (seg == E).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "moe/config.h"
#include "moe/dtype.h"

namespace moe::dense {

/// How the activation kernel stores the FC2 input.
enum class IntermediateFormat {
  kAct16,         ///< act dtype: w * h
  kFp8PerTensor,  ///< e4m3(h / s_d) with 1x128 GEMM scales s_d * w
  kFp8Block,      ///< e4m3(h / s) per 1x128 group, s = max(amax, 1e-4) / 448, GEMM scales s * w
};

struct ActivationParams {
  const float* fc1_out = nullptr;  // f32 [rows, n1]
  int64_t n1 = 0;
  int64_t rows = 0;    // rows written (T, or T padded for the fp8 GEMMs); rows >= tokens get 0
  int64_t tokens = 0;  // T: rows that have routing
  const int32_t* topk_ids = nullptr;    // i32 [T, top_k]
  const float* topk_weights = nullptr;  // f32 [T, top_k]
  int top_k = 0;
  int num_experts = 0;       // E, routed segments
  int expert_begin = 0;      // global id of segment 0
  int64_t inter = 0;         // I
  int64_t shared_inter = 0;  // S
  bool with_routed = true;
  bool with_shared = false;
  const float* gate_scale = nullptr;  // f32 [E + 1] per segment, multiplies FC1 (or nullptr)
  const float* up_scale = nullptr;    // f32 [E + 1]
  const float* bias13 = nullptr;      // f32 [n1], added after the scale (or nullptr)
  Activation activation = Activation::kSwiGLU;
  SwigluOaiParams oai;
  IntermediateFormat format = IntermediateFormat::kAct16;
  DType act_dtype = DType::kBF16;  // kAct16 output type
  void* out = nullptr;             // [rows, k2] act dtype or e4m3
  int64_t k2 = 0;
  float* out_scales = nullptr;                // fp8: f32 [k2 / 128, rows] group-major
  const float* intermediate_scale = nullptr;  // kFp8PerTensor: device f32 [1] (s_d)
};

/// h = act(gate * gate_scale + b, up * up_scale + b) for the intermediate columns
/// [col_begin, col_end) of every row, multiplied by the token's routing weight for the
/// column's segment (summed over k; 0 where not selected, 1 for the shared MLP when
/// with_shared), stored per `format`. col_begin and, for fp8, the segment sizes are multiples
/// of 128.
void launch_dense_activation(const ActivationParams& p, int64_t col_begin, int64_t col_end,
                             cudaStream_t stream);

struct FinalizeParams {
  const float* y = nullptr;  // f32 [T, hidden]: FC2's output
  void* out = nullptr;       // act dtype [T, hidden]
  DType act_dtype = DType::kBF16;
  int64_t tokens = 0;
  int64_t hidden = 0;
  const int32_t* topk_ids = nullptr;  // i32 [T, top_k]
  const float* topk_weights = nullptr;
  int top_k = 0;
  int num_experts = 0;
  int expert_begin = 0;
  const float* bias2 = nullptr;  // f32 [E, hidden] or nullptr
  bool with_routed = true;       // add sum_k w_k * bias2[e_k]
  bool accumulate = false;       // add out
};

/// out = act_dtype(y + sum_k w_k b2[e_k] + (accumulate ? out : 0)), rounded once.
void launch_dense_finalize(const FinalizeParams& p, cudaStream_t stream);

}  // namespace moe::dense
