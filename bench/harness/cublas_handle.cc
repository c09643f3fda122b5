// CublasHandle (cublas_handle.h).
#include "bench/harness/cublas_handle.h"

#include "core/cuda_check.h"

namespace moe::bench {

CublasHandle::CublasHandle(cudaStream_t stream) {
  int device = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  MOE_CUBLAS_CHECK(cublasCreate(&handle_));
  try {
    workspace_ =
        Tensor::empty({static_cast<int64_t>(kWorkspaceBytes)}, DType::kU8, Device::cuda(device));
    MOE_CUBLAS_CHECK(cublasSetStream(handle_, stream));
    MOE_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.data(), kWorkspaceBytes));
    MOE_CUBLAS_CHECK(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST));
  } catch (...) {
    cublasDestroy(handle_);
    throw;
  }
}

CublasHandle::~CublasHandle() {
  if (handle_) cublasDestroy(handle_);
}

int CublasHandle::version() const {
  int v = 0;
  MOE_CUBLAS_CHECK(cublasGetVersion(handle_, &v));
  return v;
}

}  // namespace moe::bench
