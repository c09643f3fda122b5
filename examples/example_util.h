// Small helpers shared by the examples, so that each one shows only MoE Engine's own calls:
// bf16 conversions (bf16 is the upper half of an IEEE float), random inputs, the distance of
// two outputs, and copies between the host and the device a layer runs on.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "moe/moe.h"
#ifdef MOE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace example {

/// The exit code ctest reads as "skipped" (SKIP_RETURN_CODE in examples/CMakeLists.txt).
inline constexpr int kSkip = 77;

/// float -> bf16 bits, rounding to nearest even.
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

inline float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// n bf16 values ~ N(0, 1).
inline std::vector<uint16_t> random_bf16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = to_bf16(normal(rng));
  return v;
}

/// ||a - b|| / ||b|| over bf16 vectors.
inline double relative_l2(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = from_bf16(a[i]) - from_bf16(b[i]);
    num += d * d;
    den += static_cast<double>(from_bf16(b[i])) * from_bf16(b[i]);
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

/// A tensor on `device` holding a copy of `host` (bytes as given, dtype and shape as said).
inline moe::Tensor to_device(const void* host, moe::DType dtype,
                             std::initializer_list<int64_t> shape, moe::Device device) {
  moe::Tensor t = moe::Tensor::empty(shape, dtype, device);
#ifdef MOE_HAVE_CUDA
  if (device.is_cuda()) {
    const cudaError_t status = cudaMemcpy(t.data(), host, t.nbytes(), cudaMemcpyHostToDevice);
    MOE_CHECK(status == cudaSuccess, "cudaMemcpy to ", device.str(), ": ",
              cudaGetErrorString(status));
    return t;
  }
#endif
  std::memcpy(t.data(), host, t.nbytes());
  return t;
}

/// The bf16 contents of `t` (host or device).
inline std::vector<uint16_t> to_host_bf16(const moe::TensorView& t) {
  std::vector<uint16_t> v(t.numel());
#ifdef MOE_HAVE_CUDA
  if (t.device().is_cuda()) {
    const cudaError_t status = cudaMemcpy(v.data(), t.data(), t.nbytes(), cudaMemcpyDeviceToHost);
    MOE_CHECK(status == cudaSuccess, "cudaMemcpy from ", t.device().str(), ": ",
              cudaGetErrorString(status));
    return v;
  }
#endif
  std::memcpy(v.data(), t.data(), t.nbytes());
  return v;
}

}  // namespace example
