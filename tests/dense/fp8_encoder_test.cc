// The e4m3 encoder and the 1x128 scale formula that the GPU quantization kernels run
// (quant/fp8_quant_kernels.h, namespace device), compiled for the host and checked against
// the CPU codec and quantizer bit for bit. (Exhaustively over all 2^32 floats it matched when
// written; this suite keeps every rounding boundary plus a random sample, to stay fast.)
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "core/random.h"
#include "quant/formats.h"
#include "quant/fp8_quant_kernels.h"
#include "quant/quantizers.h"

namespace moe {
namespace {

void expect_same_code(float x) {
  ASSERT_EQ(quant::device::float_to_e4m3(x), fmt::float_to_e4m3(x))
      << "x = " << x << " (bits 0x" << std::hex << std::bit_cast<uint32_t>(x) << ")";
}

TEST(Fp8DeviceEncoder, EveryRoundingBoundary) {
  for (int code = 0; code < 0x7E; ++code) {
    const float a = fmt::e4m3_to_float(static_cast<uint8_t>(code));
    const float b = fmt::e4m3_to_float(static_cast<uint8_t>(code + 1));
    const float mid = (a + b) / 2;
    for (float x : {a, b, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      expect_same_code(x);
      expect_same_code(-x);
    }
  }
  for (float x : {0.0f, 448.0f, 464.0f, 1e30f, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min(), 0.0009765625f, 0.00048828125f}) {
    expect_same_code(x);
    expect_same_code(-x);
  }
  // Values that round to zero keep their sign.
  EXPECT_EQ(quant::device::float_to_e4m3(-1e-9f), 0x80);
  EXPECT_EQ(quant::device::float_to_e4m3(-0.0009765625f), 0x80);  // -2^-10: a tie, to even 0
  EXPECT_EQ(quant::device::float_to_e4m3(-std::numeric_limits<float>::quiet_NaN()), 0xFF);
}

TEST(Fp8DeviceEncoder, RandomBitPatterns) {
  for (uint64_t i = 0; i < (uint64_t{1} << 22); ++i) {
    expect_same_code(std::bit_cast<float>(static_cast<uint32_t>(mix64(i))));
  }
}

// The group scale s = max(amax, 1e-4) / 448 (and its power-of-two variant) against the CPU
// quantizer's, read back from a group whose largest element is amax.
TEST(Fp8DeviceEncoder, GroupScaleMatchesTheCpuQuantizer) {
  std::vector<float> amaxes = {0.0f, 1e-9f, 9.99e-5f, 1e-4f, 1.0001e-4f, 1.0f, 448.0f, 3e38f};
  for (uint64_t i = 0; i < 4096; ++i) {
    amaxes.push_back(std::ldexp(1.0f + uniform_at(3, i), static_cast<int>(i % 60) - 30));
  }
  for (float amax : amaxes) {
    for (bool pow2 : {false, true}) {
      std::vector<float> group(128, 0.0f);
      group[17] = -amax;
      std::vector<uint8_t> q(128);
      float want = 0;
      quant::quantize_fp8_act_1x128(group.data(), 1, 128, pow2, q.data(), &want);
      const float got = quant::device::fp8_group_scale(amax, pow2);
      ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want))
          << "amax " << amax << (pow2 ? " pow2" : "");
      ASSERT_EQ(quant::device::float_to_e4m3(quant::device::div_rn(-amax, got)), q[17]);
    }
  }
}

}  // namespace
}  // namespace moe
