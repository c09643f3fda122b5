// An owned cuBLAS handle bound to one stream, with its own workspace so that calls need no
// allocation (a requirement for capturing them in a CUDA graph). Built only with CUDA.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "moe/tensor.h"

namespace moe::bench {

class CublasHandle {
 public:
  /// 32 MiB of workspace: what cuBLAS recommends for Hopper.
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;

  explicit CublasHandle(cudaStream_t stream);
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }
  /// cublasGetVersion.
  int version() const;

 private:
  cublasHandle_t handle_ = nullptr;
  Tensor workspace_;  // u8 [kWorkspaceBytes] on the GPU
};

}  // namespace moe::bench
