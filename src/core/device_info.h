// The machine a layer may run on: whether a CUDA GPU is present and what it is.
#pragma once

#include <cstddef>
#include <string>

namespace moe {

struct DeviceInfo {
  bool cuda_built = false;  ///< the library was compiled with CUDA
  bool has_cuda = false;    ///< a usable CUDA device is present
  int device_index = 0;
  int sm_major = 0;
  int sm_minor = 0;
  int num_sms = 0;
  size_t memory_bytes = 0;
  std::string name;  ///< "NVIDIA H100 80GB HBM3", or "cpu"
  int cpu_threads = 1;

  /// Probes the current CUDA device (when built with CUDA) and the CPU.
  static DeviceInfo detect();
  /// A CPU-only description (tests, and machines without a GPU).
  static DeviceInfo cpu_only();
  bool is_hopper() const { return has_cuda && sm_major == 9; }
  std::string str() const;
};

}  // namespace moe
