// Kernels the standalone DRAM tools share (weight_stream.cu, dram_mix.cu; each its own
// executable, so static: a copy per translation unit).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

// A read stream: n 16-byte words, grid-stride, folded into one word so that the loads stay
// (`sink` written only if the fold hits a constant: never, for the tools' fills).
static __global__ void read_all(const uint4* p, size_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // keeps the loads
}
