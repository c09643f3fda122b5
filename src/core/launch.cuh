// The one helper every kernel launch goes through: sets launch attributes (programmatic
// dependent launch when asked) and checks the launch.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "core/cuda_check.h"

namespace moe {

struct LaunchOptions {
  dim3 grid;
  dim3 block;
  size_t smem_bytes = 0;
  cudaStream_t stream = nullptr;
  /// Let this kernel start while the previous one on the stream finishes (it must call
  /// griddepcontrol.wait / cudaGridDependencySynchronize before reading its inputs).
  bool programmatic_dependent_launch = false;
};

template <class... KernelArgs, class... Args>
void launch_kernel(const char* name, void (*kernel)(KernelArgs...), const LaunchOptions& o,
                   Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = o.grid;
  config.blockDim = o.block;
  config.dynamicSmemBytes = o.smem_bytes;
  config.stream = o.stream;
  cudaLaunchAttribute attr[1];
  if (o.programmatic_dependent_launch) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attr;
    config.numAttrs = 1;
  }
  MOE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), "launching ",
                 name);
}

}  // namespace moe

namespace moe {

/// In a kernel launched with programmatic_dependent_launch: wait until the previous kernel
/// on the stream has finished and its writes are visible.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
/// Lets the next kernel on the stream begin launching early.
__device__ __forceinline__ void pdl_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

}  // namespace moe
