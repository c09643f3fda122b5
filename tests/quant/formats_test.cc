// Exhaustive tests of the element and scale codecs (src/quant/formats.h).
//
// Every code of every format is decoded and compared with the format's formula (written
// here independently, in double), and re-encoded. Encoders are checked at every midpoint
// between adjacent representable values (ties to even, one ulp either side to the nearer
// value), at saturation, and against naive encoders written here that search all codes for
// the nearest value, on a million random floats over a wide exponent range.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "moe/errors.h"
#include "quant/formats.h"

namespace moe::fmt {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
float float_of(uint32_t b) { return std::bit_cast<float>(b); }
bool sign_of(float x) { return std::signbit(x); }

// ---- Independent formulas -----------------------------------------------------------

/// e4m3 fn: bias 7, subnormals m * 2^-9, S.1111.111 = NaN.
double e4m3_formula(int code) {
  const int e = (code >> 3) & 0xF, m = code & 7;
  const double sign = (code & 0x80) ? -1.0 : 1.0;
  if (e == 15 && m == 7) return std::nan("");
  if (e == 0) return sign * m * std::pow(2.0, -9);
  return sign * (1.0 + m / 8.0) * std::pow(2.0, e - 7);
}

/// f16: bias 15, subnormals m * 2^-24.
double f16_formula(int code) {
  const int e = (code >> 10) & 0x1F, m = code & 0x3FF;
  const double sign = (code & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m == 0 ? sign * HUGE_VAL : std::nan("");
  if (e == 0) return sign * m * std::pow(2.0, -24);
  return sign * (1.0 + m / 1024.0) * std::pow(2.0, e - 15);
}

/// bf16: bias 127, subnormals m * 2^-133.
double bf16_formula(int code) {
  const int e = (code >> 7) & 0xFF, m = code & 0x7F;
  const double sign = (code & 0x8000) ? -1.0 : 1.0;
  if (e == 255) return m == 0 ? sign * HUGE_VAL : std::nan("");
  if (e == 0) return sign * m * std::pow(2.0, -133);
  return sign * (1.0 + m / 128.0) * std::pow(2.0, e - 127);
}

/// Naive RNE encoder: the nearest of `values` (non-negative, indexed by code, code 0 = +0),
/// ties to the even code; the sign is `sign_bit` or'ed in. Saturation falls out: above the
/// largest value, the largest is nearest.
uint8_t naive_encode(const std::vector<double>& values, uint8_t sign_bit, float x) {
  const double a = std::fabs(static_cast<double>(x));
  int best = 0;
  for (int c = 1; c < static_cast<int>(values.size()); ++c) {
    const double d = std::fabs(values[c] - a), db = std::fabs(values[best] - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return static_cast<uint8_t>(best | (std::signbit(x) ? sign_bit : 0));
}

std::vector<double> e4m3_positive_values() {  // codes 0x00..0x7E
  std::vector<double> v;
  for (int c = 0; c <= 0x7E; ++c) v.push_back(e4m3_formula(c));
  return v;
}

const std::vector<double> kE2M1Values = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

/// Random floats: random sign and mantissa bits, exponent uniform in [lo, hi].
std::vector<float> random_floats(uint64_t seed, int count, int lo, int hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> exp_dist(lo, hi);
  std::vector<float> out;
  out.reserve(count);
  for (int i = 0; i < count; ++i) {
    const uint64_t r = rng();
    const uint32_t sign = (r & 1) ? 0x80000000u : 0u;
    const uint32_t mant = static_cast<uint32_t>(r >> 8) & 0x7FFFFFu;
    const uint32_t biased = static_cast<uint32_t>(exp_dist(rng) + 127);
    out.push_back(float_of(sign | (biased << 23) | mant));
  }
  return out;
}

// ---- bf16 ---------------------------------------------------------------------------

TEST(Bf16, EveryCodeDecodesToFormulaAndRoundTrips) {
  for (int c = 0; c < 0x10000; ++c) {
    const auto code = static_cast<uint16_t>(c);
    const float v = bf16_to_float(code);
    const double want = bf16_formula(c);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(v)) << std::hex << c;
      // NaN stays NaN with its sign and payload, quieted.
      ASSERT_EQ(float_to_bf16(v), code | 0x0040) << std::hex << c;
      continue;
    }
    ASSERT_EQ(static_cast<double>(v), want) << std::hex << c;
    ASSERT_EQ(sign_of(v), (c & 0x8000) != 0) << std::hex << c;
    ASSERT_EQ(float_to_bf16(v), code) << std::hex << c;
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f), 0x3F80);                     // tie, even down
  EXPECT_EQ(float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);                 // tie, odd up
  EXPECT_EQ(float_to_bf16(float_of(0x3F808001u)), 0x3F81);              // just above the tie
  EXPECT_EQ(float_to_bf16(float_of(0x3F807FFFu)), 0x3F80);              // just below
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds to Inf
  EXPECT_EQ(float_to_bf16(-kInf), 0xFF80);
  EXPECT_TRUE(std::isnan(round_bf16(kNaN)));
  EXPECT_EQ(float_to_bf16(float_of(0x7F800001u)), 0x7FC0);  // signalling NaN -> quiet
}

TEST(Bf16, MatchesNearestOfNeighboursOnRandomFloats) {
  for (float x : random_floats(1, 200000, -126, 127)) {
    // The two bf16 neighbours of x: truncation and the next code away from zero (above the
    // largest finite bf16 that is Inf, standing for the unbounded-exponent value 2^128).
    const auto lo = static_cast<uint16_t>(bits_of(x) >> 16);
    const auto hi = static_cast<uint16_t>(lo + 1);
    const double hi_value =
        (hi & 0x7FFF) == 0x7F80 ? std::copysign(std::ldexp(1.0, 128), x) : bf16_formula(hi);
    const double dl = std::fabs(bf16_formula(lo) - x), dh = std::fabs(hi_value - x);
    const uint16_t want = (dl < dh || (dl == dh && lo % 2 == 0)) ? lo : hi;
    ASSERT_EQ(float_to_bf16(x), want) << x;
  }
}

// ---- f16 ----------------------------------------------------------------------------

TEST(F16, EveryCodeDecodesToFormulaAndRoundTrips) {
  for (int c = 0; c < 0x10000; ++c) {
    const auto code = static_cast<uint16_t>(c);
    const float v = f16_to_float(code);
    const double want = f16_formula(c);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(v)) << std::hex << c;
      ASSERT_EQ(float_to_f16(v), code | 0x0200) << std::hex << c;  // quieted, payload kept
      continue;
    }
    ASSERT_EQ(static_cast<double>(v), want) << std::hex << c;
    ASSERT_EQ(sign_of(v), (c & 0x8000) != 0) << std::hex << c;
    ASSERT_EQ(float_to_f16(v), code) << std::hex << c;
  }
}

TEST(F16, RoundsOverflowsAndUnderflows) {
  EXPECT_EQ(float_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(65519.99f), 0x7BFF);  // below the midpoint to 65536
  EXPECT_EQ(float_to_f16(65520.0f), 0x7C00);   // tie with the would-be 65536: odd -> Inf
  EXPECT_EQ(float_to_f16(1e9f), 0x7C00);
  EXPECT_EQ(float_to_f16(-1e9f), 0xFC00);
  EXPECT_EQ(float_to_f16(0x1p-24f), 0x0001);               // smallest subnormal
  EXPECT_EQ(float_to_f16(0x1p-25f), 0x0000);               // tie to even: 0
  EXPECT_EQ(float_to_f16(float_of(0x33000001u)), 0x0001);  // just above 2^-25
  EXPECT_EQ(float_to_f16(-0x1p-26f), 0x8000);              // signed zero
  EXPECT_EQ(float_to_f16(3 * 0x1p-25f), 0x0002);           // 1.5 units: tie, odd up
  EXPECT_EQ(float_to_f16(0x1p-14f - 0x1p-25f), 0x0400);    // rounds up into the normals
  EXPECT_EQ(float_to_f16(1.0f + 0x1p-11f), 0x3C00);        // tie, even down
  EXPECT_EQ(float_to_f16(1.0f + 3 * 0x1p-11f), 0x3C02);    // tie, odd up
}

TEST(F16, MatchesNearestOfAllValuesOnRandomFloats) {
  // All finite non-negative f16 values in code order (increasing), from the formula.
  std::vector<double> values;
  for (int c = 0; c < 0x7C00; ++c) values.push_back(f16_formula(c));
  for (float x : random_floats(2, 200000, -27, 16)) {
    const double a = std::fabs(static_cast<double>(x));
    uint16_t want;
    if (a >= 65520.0) {
      want = 0x7C00;  // at or beyond the midpoint of 65504 and 2^16
    } else if (a >= 65504.0) {
      want = 0x7BFF;
    } else {
      const auto it = std::lower_bound(values.begin(), values.end(), a);
      const int hi = static_cast<int>(it - values.begin());
      const int lo = values[hi] == a ? hi : hi - 1;
      const double dl = a - values[lo], dh = values[hi] - a;
      want = static_cast<uint16_t>((dl < dh || (dl == dh && lo % 2 == 0)) ? lo : hi);
    }
    if (std::signbit(x)) want |= 0x8000;
    ASSERT_EQ(float_to_f16(x), want) << x;
  }
}

// ---- e4m3 ---------------------------------------------------------------------------

TEST(E4M3, EveryCodeDecodesToFormulaAndRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const auto code = static_cast<uint8_t>(c);
    const float v = e4m3_to_float(code);
    if ((c & 0x7F) == 0x7F) {
      ASSERT_TRUE(std::isnan(v)) << c;
      ASSERT_EQ(float_to_e4m3(v), code) << c;  // NaN encodes as 0x7F with its sign
      continue;
    }
    ASSERT_EQ(static_cast<double>(v), e4m3_formula(c)) << c;
    ASSERT_EQ(sign_of(v), (c & 0x80) != 0) << c;  // 0x80 is -0
    ASSERT_EQ(float_to_e4m3(v), code) << c;
  }
  EXPECT_EQ(e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_float(0x01), 0x1p-9f);
  EXPECT_EQ(e4m3_to_float(0x08), 0x1p-6f);
  EXPECT_EQ(e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(float_to_e4m3(-0.0f), 0x80);
}

TEST(E4M3, EveryMidpointRoundsToEvenAndNeighboursToNearer) {
  const std::vector<double> values = e4m3_positive_values();
  for (int c = 0; c + 1 < static_cast<int>(values.size()); ++c) {
    const auto lo = static_cast<uint8_t>(c), hi = static_cast<uint8_t>(c + 1);
    const float mid = static_cast<float>((values[c] + values[c + 1]) / 2);
    ASSERT_EQ(static_cast<double>(mid), (values[c] + values[c + 1]) / 2);  // exact in float
    const uint8_t even = (c % 2 == 0) ? lo : hi;
    ASSERT_EQ(float_to_e4m3(mid), even) << mid;
    ASSERT_EQ(float_to_e4m3(std::nextafter(mid, kInf)), hi) << mid;
    ASSERT_EQ(float_to_e4m3(std::nextafter(mid, 0.0f)), lo) << mid;
    ASSERT_EQ(float_to_e4m3(-mid), even | 0x80) << mid;
    ASSERT_EQ(float_to_e4m3(-std::nextafter(mid, kInf)), hi | 0x80) << mid;
    ASSERT_EQ(float_to_e4m3(-std::nextafter(mid, 0.0f)), lo | 0x80) << mid;
  }
}

TEST(E4M3, SaturatesAndEncodesNaN) {
  EXPECT_EQ(float_to_e4m3(448.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3(464.0f), 0x7E);  // midpoint to the NaN slot 480: saturates
  EXPECT_EQ(float_to_e4m3(480.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3(1e9f), 0x7E);
  EXPECT_EQ(float_to_e4m3(-1e9f), 0xFE);
  EXPECT_EQ(float_to_e4m3(kInf), 0x7E);
  EXPECT_EQ(float_to_e4m3(-kInf), 0xFE);
  EXPECT_EQ(float_to_e4m3(kNaN), 0x7F);
  EXPECT_EQ(float_to_e4m3(-kNaN), 0xFF);
  EXPECT_EQ(float_to_e4m3(0x1p-10f), 0x00);  // half the smallest subnormal: tie to even 0
  EXPECT_EQ(float_to_e4m3(-0x1p-10f), 0x80);
  EXPECT_EQ(float_to_e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
}

TEST(E4M3, MatchesNaiveEncoderOnRandomFloats) {
  const std::vector<double> values = e4m3_positive_values();
  for (float x : random_floats(3, 1000000, -14, 10)) {
    ASSERT_EQ(float_to_e4m3(x), naive_encode(values, 0x80, x)) << x;
  }
}

// ---- e2m1 ---------------------------------------------------------------------------

TEST(E2M1, EveryNibbleDecodesAndRoundTrips) {
  const float table[16] = {0, .5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -.5f, -1, -1.5f, -2, -3, -4, -6};
  for (int c = 0; c < 16; ++c) {
    const float v = e2m1_to_float(static_cast<uint8_t>(c));
    ASSERT_EQ(v, table[c]) << c;
    ASSERT_EQ(sign_of(v), c >= 8) << c;
    ASSERT_EQ(float_to_e2m1(v), c) << c;
    ASSERT_EQ(e2m1_to_float(static_cast<uint8_t>(c | 0xF0)), table[c]) << c;  // high bits ignored
  }
}

TEST(E2M1, EveryMidpointRoundsToEvenAndNeighboursToNearer) {
  for (int c = 0; c + 1 < 8; ++c) {
    const float mid = static_cast<float>((kE2M1Values[c] + kE2M1Values[c + 1]) / 2);
    const uint8_t even = static_cast<uint8_t>(c % 2 == 0 ? c : c + 1);
    ASSERT_EQ(float_to_e2m1(mid), even) << mid;
    ASSERT_EQ(float_to_e2m1(std::nextafter(mid, kInf)), c + 1) << mid;
    ASSERT_EQ(float_to_e2m1(std::nextafter(mid, 0.0f)), c) << mid;
    ASSERT_EQ(float_to_e2m1(-mid), even | 0x8) << mid;
    ASSERT_EQ(float_to_e2m1(-std::nextafter(mid, kInf)), (c + 1) | 0x8) << mid;
    ASSERT_EQ(float_to_e2m1(-std::nextafter(mid, 0.0f)), c | 0x8) << mid;
  }
  // The same ties by value.
  EXPECT_EQ(e2m1_to_float(float_to_e2m1(0.25f)), 0.0f);
  EXPECT_EQ(e2m1_to_float(float_to_e2m1(0.75f)), 1.0f);
  EXPECT_EQ(e2m1_to_float(float_to_e2m1(1.25f)), 1.0f);
  EXPECT_EQ(e2m1_to_float(float_to_e2m1(1.75f)), 2.0f);
  EXPECT_EQ(e2m1_to_float(float_to_e2m1(2.5f)), 2.0f);
  EXPECT_EQ(e2m1_to_float(float_to_e2m1(3.5f)), 4.0f);
  EXPECT_EQ(e2m1_to_float(float_to_e2m1(5.0f)), 4.0f);
  EXPECT_EQ(e2m1_to_float(float_to_e2m1(-5.0f)), -4.0f);
}

TEST(E2M1, SaturatesAndMapsNaNToZero) {
  EXPECT_EQ(float_to_e2m1(6.0f), 0x7);
  EXPECT_EQ(float_to_e2m1(7.0f), 0x7);
  EXPECT_EQ(float_to_e2m1(1e9f), 0x7);
  EXPECT_EQ(float_to_e2m1(-1e9f), 0xF);
  EXPECT_EQ(float_to_e2m1(kInf), 0x7);
  EXPECT_EQ(float_to_e2m1(-kInf), 0xF);
  EXPECT_EQ(float_to_e2m1(kNaN), 0x0);
  EXPECT_EQ(float_to_e2m1(-0.1f), 0x8);  // rounds to -0
}

TEST(E2M1, MatchesNaiveEncoderOnRandomFloats) {
  for (float x : random_floats(4, 1000000, -6, 5)) {
    ASSERT_EQ(float_to_e2m1(x), naive_encode(kE2M1Values, 0x8, x)) << x;
  }
}

TEST(E2M1, PacksEvenElementInLowNibble) {
  for (int even = 0; even < 16; ++even) {
    for (int odd = 0; odd < 16; ++odd) {
      const uint8_t byte = e2m1_pack(static_cast<uint8_t>(even), static_cast<uint8_t>(odd));
      ASSERT_EQ(byte, even | (odd << 4));
      ASSERT_EQ(e2m1_low(byte), even);
      ASSERT_EQ(e2m1_high(byte), odd);
    }
  }
}

// ---- ue8m0 --------------------------------------------------------------------------

TEST(UE8M0, EveryCodeIsAPowerOfTwoAndRoundTrips) {
  for (int c = 0; c < 255; ++c) {
    const float v = ue8m0_to_float(static_cast<uint8_t>(c));
    ASSERT_EQ(static_cast<double>(v), std::ldexp(1.0, c - 127)) << c;
    ASSERT_EQ(pow2_to_ue8m0(v), c) << c;
  }
  EXPECT_TRUE(std::isnan(ue8m0_to_float(0xFF)));
  EXPECT_EQ(ue8m0_to_float(127), 1.0f);
  EXPECT_EQ(ue8m0_to_float(0), 0x1p-127f);
}

TEST(UE8M0, RejectsWhatIsNotAnEncodablePowerOfTwo) {
  for (float x : {3.0f, 0.0f, -2.0f, 0x1p-128f, 1.5f * 0x1p-127f, kInf, kNaN}) {
    EXPECT_THROW(pow2_to_ue8m0(x), moe::Error) << x;
  }
  EXPECT_EQ(pow2_to_ue8m0(0x1p127f), 254);
}

}  // namespace
}  // namespace moe::fmt
