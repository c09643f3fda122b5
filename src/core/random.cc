#include "core/random.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "moe/errors.h"
#include "quant/formats.h"

namespace moe {

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t stream_id(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  return mix64(mix64(mix64(mix64(seed) ^ a) ^ b) ^ c);
}

float uniform_at(uint64_t stream, uint64_t index) {
  // 24 random bits -> [0, 1)
  return static_cast<float>(mix64(stream ^ mix64(index)) >> 40) * (1.0f / 16777216.0f);
}

float normal_at(uint64_t stream, uint64_t index) {
  // Irwin-Hall: the sum of four 16-bit uniforms from one hash, centred and scaled to unit
  // variance. Cheap (one hash per value), close to normal, bounded to +-2*sqrt(3).
  const uint64_t h = mix64(stream ^ mix64(index));
  const float sum =
      static_cast<float>((h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48)) *
      (1.0f / 65536.0f);
  return (sum - 2.0f) * 1.7320508f;  // variance of the sum of 4 U(0,1) is 1/3
}

void fill_normal(const TensorView& t, uint64_t stream, float stddev) {
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(),
            "fill_normal needs a contiguous host tensor, got ", t.str());
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) t.data_as<float>()[i] = stddev * normal_at(stream, i);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i)
        t.data_as<uint16_t>()[i] = fmt::float_to_bf16(stddev * normal_at(stream, i));
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i)
        t.data_as<uint16_t>()[i] = fmt::float_to_f16(stddev * normal_at(stream, i));
      break;
    default:
      MOE_THROW("fill_normal: unsupported dtype ", dtype_name(t.dtype()));
  }
}

void fill_poison(const TensorView& t) {
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(),
            "fill_poison needs a contiguous host tensor, got ", t.str());
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i)
        t.data_as<float>()[i] = std::numeric_limits<float>::quiet_NaN();
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) t.data_as<uint16_t>()[i] = 0x7FC0;
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) t.data_as<uint16_t>()[i] = 0x7E00;
      break;
    case DType::kI32:
      for (int64_t i = 0; i < n; ++i) t.data_as<int32_t>()[i] = 0x7FFFFFFF;
      break;
    default:
      std::memset(t.data(), 0xFF, t.nbytes());
  }
}

}  // namespace moe
