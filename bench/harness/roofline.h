// The roofline of this GPU, measured in the same run as the cases it judges:
//   copy bandwidth  cudaMemcpyAsync device-to-device of a 2 GiB buffer; bytes read + written
//                   (2 x 2 GiB) over the median time
//   GEMM rate       cuBLAS cublasGemmEx on 8192^3 random bf16 data (TN, bf16 output,
//                   CUBLAS_COMPUTE_32F); 2 * 8192^3 over the median time
//   FP8 GEMM rate   cuBLASLt cublasLtMatmul on 8192^3 random e4m3 data (TN: A = the [N, K]
//                   operand transposed, B = [M, K]; bf16 output; CUBLAS_COMPUTE_32F with f32
//                   per-tensor scales; fast accumulation on); each of the heuristic's first
//                   kFp8GemmAlgos algorithms is timed like the bf16 GEMM, and the fastest
//                   median is the rate. Only when asked (runs whose GEMMs are fp8).
// Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include "bench/harness/bench_math.h"
#include "bench/harness/cublas_handle.h"

namespace moe::bench {

inline constexpr size_t kCopyBufferBytes = size_t{2} << 30;
inline constexpr int kGemmN = 8192;
/// Heuristic candidates timed for the FP8 GEMM rate (the fastest counts).
inline constexpr int kFp8GemmAlgos = 4;

/// Measures the copy bandwidth and the bf16 GEMM rate on `stream` (the handle must be bound
/// to it), and the FP8 GEMM rate too when `fp8_gemm` is set. Needs about 4.4 GiB of free
/// device memory, released before it returns; throws moe::Error saying so otherwise, and
/// when cuBLASLt has no e4m3 GEMM for this GPU (FP8 needs sm_89 or newer).
RooflineReport measure_roofline(cudaStream_t stream, const CublasHandle& cublas, uint64_t seed,
                                bool fp8_gemm);

}  // namespace moe::bench
