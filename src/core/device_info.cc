#include "core/device_info.h"

#include <sstream>

#include "core/thread_pool.h"

#ifdef MOE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace moe {

DeviceInfo DeviceInfo::cpu_only() {
  DeviceInfo info;
#ifdef MOE_HAVE_CUDA
  info.cuda_built = true;
#endif
  info.name = "cpu";
  info.cpu_threads = cpu_num_threads();
  return info;
}

DeviceInfo DeviceInfo::detect() {
  DeviceInfo info = cpu_only();
#ifdef MOE_HAVE_CUDA
  int count = 0;
  // No GPU (or no driver) is a normal outcome here, not an error.
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return info;
  }
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    cudaGetLastError();
    return info;
  }
  info.has_cuda = true;
  info.device_index = dev;
  info.sm_major = prop.major;
  info.sm_minor = prop.minor;
  info.num_sms = prop.multiProcessorCount;
  info.memory_bytes = prop.totalGlobalMem;
  info.name = prop.name;
#endif
  return info;
}

std::string DeviceInfo::str() const {
  std::ostringstream os;
  if (has_cuda) {
    os << name << " (sm_" << sm_major << sm_minor << ", " << num_sms << " SMs, "
       << (memory_bytes >> 30) << " GiB)";
  } else {
    os << "cpu (" << cpu_threads << " threads"
       << (cuda_built ? "; no CUDA device found" : "; built without CUDA") << ")";
  }
  return os.str();
}

}  // namespace moe
