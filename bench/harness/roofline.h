// The roofline of this GPU, measured in the same run as the cases it judges:
//   copy bandwidth  cudaMemcpyAsync device-to-device of a 2 GiB buffer; bytes read + written
//                   (2 x 2 GiB) over the median time
//   GEMM rate       cuBLAS cublasGemmEx on 8192^3 random bf16 data (TN, bf16 output,
//                   CUBLAS_COMPUTE_32F); 2 * 8192^3 over the median time
// Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include "bench/harness/bench_math.h"
#include "bench/harness/cublas_handle.h"

namespace moe::bench {

inline constexpr size_t kCopyBufferBytes = size_t{2} << 30;
inline constexpr int kGemmN = 8192;

/// Measures both ceilings on `stream` (the handle must be bound to it). Needs about 4.4 GiB
/// of free device memory, released before it returns; throws moe::Error saying so otherwise.
RooflineReport measure_roofline(cudaStream_t stream, const CublasHandle& cublas, uint64_t seed);

}  // namespace moe::bench
