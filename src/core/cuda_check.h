// CUDA, cuBLAS and NCCL status checks (MOE_CHECK_GEN variants) and the device assert.
// Include only from translation units compiled with the CUDA toolkit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>

#include "moe/errors.h"

#define MOE_CUDA_CHECK(expr, ...) \
  MOE_CHECK_GEN(expr, cudaSuccess, cudaGetErrorString __VA_OPT__(, ) __VA_ARGS__)

/// Checks the last kernel launch.
#define MOE_CUDA_CHECK_LAUNCH(...) MOE_CUDA_CHECK(cudaGetLastError() __VA_OPT__(, ) __VA_ARGS__)

#ifdef MOE_HAVE_CUBLAS
#include <cublasLt.h>
#include <cublas_v2.h>
#define MOE_CUBLAS_CHECK(expr, ...) \
  MOE_CHECK_GEN(expr, CUBLAS_STATUS_SUCCESS, cublasGetStatusString __VA_OPT__(, ) __VA_ARGS__)
#endif

#ifdef MOE_HAVE_NCCL
#include <nccl.h>
namespace moe::detail {
inline std::string nccl_error_string(ncclResult_t r) {
  const char* last = ncclGetLastError(nullptr);
  return std::string(ncclGetErrorString(r)) +
         ((last && *last) ? std::string(" (") + last + ")" : "");
}
}  // namespace moe::detail
#define MOE_NCCL_CHECK(expr, ...) \
  MOE_CHECK_GEN(expr, ncclSuccess, ::moe::detail::nccl_error_string __VA_OPT__(, ) __VA_ARGS__)
#endif

/// Device-side assert: prints the condition and location, then traps the kernel.
#define MOE_DEVICE_ASSERT(cond)                                                                    \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("%s:%d: device assert failed: %s (block %d, thread %d)\n", __FILE__, __LINE__, #cond, \
             static_cast<int>(blockIdx.x), static_cast<int>(threadIdx.x));                         \
      __trap();                                                                                    \
    }                                                                                              \
  } while (0)
