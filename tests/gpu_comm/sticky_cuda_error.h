// A guard for the GPU tests of this folder: a kernel fault (an illegal memory access, a
// trap) leaves a "sticky" CUDA error that fails every later CUDA call of the process, so
// one faulty test would otherwise be reported as dozens of unrelated failures (cudaMalloc
// failing, NCCL init failing, ...). Tests that come later skip instead, naming the error;
// the first failure in the log is the real one.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>

namespace moe::testing {

/// "" when this process's CUDA context still works; else the error an earlier test left in
/// it. Clears a non-sticky error (one that the next call does not repeat).
inline std::string sticky_cuda_error() {
  cudaGetLastError();
  if (cudaDeviceSynchronize() == cudaSuccess) return "";
  cudaGetLastError();
  const cudaError_t again = cudaDeviceSynchronize();
  return again == cudaSuccess ? std::string() : std::string(cudaGetErrorString(again));
}

}  // namespace moe::testing

/// Skips the test when an earlier test left a sticky CUDA error in this process.
#define MOE_REQUIRE_USABLE_CUDA_CONTEXT()                                                 \
  do {                                                                                    \
    const std::string sticky = ::moe::testing::sticky_cuda_error();                       \
    if (!sticky.empty()) {                                                                \
      GTEST_SKIP() << "an earlier test left a sticky CUDA error (" << sticky              \
                   << "): this process's GPU context is unusable; see the first failure"; \
    }                                                                                     \
  } while (0)
