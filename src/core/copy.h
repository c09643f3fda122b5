// Copies between tensors on any devices (host <-> GPU), and device copies of host tensors.
#pragma once

#include "moe/tensor.h"

namespace moe {

/// dst <- src (same byte size, contiguous). Synchronous; not for a forward path.
void copy_tensor(const TensorView& dst, const TensorView& src);
/// A new tensor on `device` holding a copy of `src`.
Tensor copy_to(const TensorView& src, Device device);
/// Waits for all work on `device` (no-op on the CPU).
void device_synchronize(Device device);
/// Waits for `stream` (a cudaStream_t; nullptr: the legacy default stream) on GPUs only.
void stream_synchronize(Device device, void* stream);

}  // namespace moe
