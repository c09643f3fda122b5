// GPU test helpers: skip where no GPU is present, and host<->device copies of tensors.
#pragma once

#include <gtest/gtest.h>

#include "core/device_info.h"
#include "moe/tensor.h"

namespace moe::testing {

/// True when a CUDA device is usable.
inline bool gpu_available() { return DeviceInfo::detect().has_cuda; }
/// True when the device is a Hopper GPU (sm_90).
inline bool hopper_available() { return DeviceInfo::detect().is_hopper(); }

/// Device copy of a host tensor, and host copy of a device tensor (synchronous).
Tensor to_device(const TensorView& host);
Tensor to_host(const TensorView& device);
/// Copies between existing tensors of the same size (any devices).
void copy_tensor(const TensorView& dst, const TensorView& src);

}  // namespace moe::testing

/// Skips the test, saying why, unless a Hopper GPU is present.
#define MOE_REQUIRE_HOPPER()                                                     \
  do {                                                                           \
    if (!::moe::testing::hopper_available()) {                                   \
      GTEST_SKIP() << "no Hopper (sm_90) GPU on this machine: GPU test skipped"; \
    }                                                                            \
  } while (0)
