#include "common/gpu_test_util.h"
#include "core/copy.h"

namespace moe::testing {

void copy_tensor(const TensorView& dst, const TensorView& src) { moe::copy_tensor(dst, src); }
Tensor to_device(const TensorView& host) { return copy_to(host, Device::cuda(0)); }
Tensor to_host(const TensorView& device) { return copy_to(device, Device::cpu()); }

}  // namespace moe::testing
