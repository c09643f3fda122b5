// quant::device::GroupDivisor (fp8_quant_kernels.h) against div_rn, exhaustively over its
// domain: every group amax a bf16 (or f16) value can take (0, subnormals, every finite
// positive), the group scale fp8_group_scale(amax) with and without pow2, and every bf16 (f16)
// value v with |v| <= amax, both signs and +-0: the quotient's bits wherever |v / s| >= 2^-24,
// and its e4m3 code everywhere.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "common/gpu_test_util.h"
#include "core/cuda_check.h"
#include "quant/fp8_quant_kernels.h"

namespace moe {
namespace {

struct Mismatches {
  unsigned long long count;
  unsigned long long pairs;  // (v, s) pairs compared
  float v, s, got, want;     // one of them
};

// A 16-bit pattern's value: bf16 (kBf16) or f16.
template <bool kBf16>
__device__ __forceinline__ float value_of(uint32_t bits) {
  if constexpr (kBf16) {
    return __uint_as_float(bits << 16);
  } else {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  }
}

// Block b: the amax of pattern b (positive, finite); its threads: every pattern v.
template <bool kBf16>
__global__ void compare_kernel(bool pow2, Mismatches* out) {
  const uint32_t amax_bits = blockIdx.x;
  const float amax = value_of<kBf16>(amax_bits);
  if (!(amax < INFINITY)) return;  // inf and NaN patterns: no finite group has them as amax
  const float s = quant::device::fp8_group_scale(amax, pow2);
  const quant::device::GroupDivisor d = quant::device::group_divisor(s);
  unsigned long long pairs = 0;
  for (uint32_t bits = threadIdx.x; bits < 65536u; bits += blockDim.x) {
    const float v = value_of<kBf16>(bits);
    if (!(fabsf(v) <= amax)) continue;
    ++pairs;
    const float got = quant::device::divide(v, d);
    const float want = __fdiv_rn(v, s);
    const bool bits_differ =
        fabsf(want) >= 0x1p-24f && __float_as_uint(got) != __float_as_uint(want);
    if (bits_differ || quant::device::float_to_e4m3(got) != quant::device::float_to_e4m3(want)) {
      if (atomicAdd(&out->count, 1ull) == 0) {
        out->v = v;
        out->s = s;
        out->got = got;
        out->want = want;
      }
    }
  }
  atomicAdd(&out->pairs, pairs);
}

template <bool kBf16>
Mismatches run(bool pow2) {
  Mismatches* d = nullptr;
  MOE_CUDA_CHECK(cudaMalloc(&d, sizeof(Mismatches)));
  MOE_CUDA_CHECK(cudaMemset(d, 0, sizeof(Mismatches)));
  // Positive patterns: bf16 0x0000..0x7FFF, f16 0x0000..0x7FFF (inf / NaN skipped).
  compare_kernel<kBf16><<<0x8000, 256>>>(pow2, d);
  MOE_CUDA_CHECK(cudaGetLastError());
  Mismatches h{};
  MOE_CUDA_CHECK(cudaMemcpy(&h, d, sizeof(h), cudaMemcpyDeviceToHost));
  MOE_CUDA_CHECK(cudaFree(d));
  return h;
}

// pairs: every finite positive amax pattern a (index 0 .. n - 1) with the 2 (a + 1) patterns
// |v| <= amax: n (n + 1) -- bf16 n = 0x7F80, f16 n = 0x7C00.
void expect_none(const Mismatches& m, unsigned long long n, const char* what) {
  EXPECT_EQ(m.pairs, n * (n + 1)) << what;
  EXPECT_EQ(m.count, 0ull) << what << ": e.g. v = " << m.v << ", s = " << m.s << ": got " << m.got
                           << ", div_rn " << m.want;
}

TEST(Fp8GroupDivisor, EqualsDivRnOnEveryBf16AndF16Group) {
  MOE_REQUIRE_HOPPER();
  for (bool pow2 : {false, true}) {
    expect_none(run<true>(pow2), 0x7F80, pow2 ? "bf16, pow2 scales" : "bf16");
    expect_none(run<false>(pow2), 0x7C00, pow2 ? "f16, pow2 scales" : "f16");
  }
}

}  // namespace
}  // namespace moe
