#include <cuda_runtime_api.h>

#include "common/gpu_test_util.h"
#include "core/cuda_check.h"

namespace moe::testing {

void copy_tensor(const TensorView& dst, const TensorView& src) {
  MOE_CHECK(dst.nbytes() == src.nbytes(), "copy_tensor: ", dst.str(), " <- ", src.str());
  if (src.nbytes() == 0) return;
  MOE_CUDA_CHECK(cudaMemcpy(dst.data(), src.data(), src.nbytes(), cudaMemcpyDefault));
}

Tensor to_device(const TensorView& host) {
  Tensor d = Tensor::empty(host.shape(), host.dtype(), Device::cuda(0));
  copy_tensor(d, host);
  return d;
}

Tensor to_host(const TensorView& device) {
  Tensor h = Tensor::empty(device.shape(), device.dtype(), Device::cpu());
  copy_tensor(h, device);
  return h;
}

}  // namespace moe::testing
