#include "core/copy.h"

#include <cstring>

#include "moe/errors.h"

#ifdef MOE_HAVE_CUDA
#include "core/cuda_check.h"
#endif

namespace moe {

void copy_tensor(const TensorView& dst, const TensorView& src) {
  MOE_CHECK(dst.nbytes() == src.nbytes(), "copy_tensor: ", dst.str(), " <- ", src.str());
  MOE_CHECK(dst.is_contiguous() && src.is_contiguous(), "copy_tensor needs contiguous tensors");
  if (src.nbytes() == 0) return;
  if (dst.device().is_cpu() && src.device().is_cpu()) {
    std::memcpy(dst.data(), src.data(), src.nbytes());
    return;
  }
#ifdef MOE_HAVE_CUDA
  MOE_CUDA_CHECK(cudaMemcpy(dst.data(), src.data(), src.nbytes(), cudaMemcpyDefault));
#else
  MOE_THROW("copy_tensor between ", dst.device().str(), " and ", src.device().str(),
            ": built without CUDA");
#endif
}

Tensor copy_to(const TensorView& src, Device device) {
  Tensor t = Tensor::empty(src.shape(), src.dtype(), device);
  copy_tensor(t, src);
  return t;
}

void device_synchronize(Device device) {
  if (device.is_cpu()) return;
#ifdef MOE_HAVE_CUDA
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
#endif
}

void stream_synchronize(Device device, void* stream) {
  if (device.is_cpu()) return;
#ifdef MOE_HAVE_CUDA
  MOE_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
#endif
}

}  // namespace moe
