// Tests of the CPU quantizers (src/quant/quantizers.h): hand-worked vectors with their exact
// codes and scales, round trips within each format's elementwise error bound, partial edge
// blocks, all-zero blocks, the FLOOR vs RCEIL MX scale rules, the 128x4 swizzle, and the
// preconditions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "moe/errors.h"
#include "quant/formats.h"
#include "quant/quantizers.h"

namespace moe::quant {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr uint8_t kPoisonCode = 0x7F;  // e4m3 NaN: never produced from finite input

/// N(0, 1) numbers, each multiplied by 2^e with e uniform in [-spread, spread] per group of
/// `group` consecutive elements, so that blocks see very different magnitudes.
std::vector<float> random_matrix(uint64_t seed, int64_t count, int64_t group, int spread) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> exp_dist(-spread, spread);
  std::vector<float> x(count);
  int e = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (i % group == 0) e = exp_dist(rng);
    x[i] = std::ldexp(normal(rng), e);
  }
  return x;
}

float amax_of(const float* x, int64_t n) {
  float a = 0;
  for (int64_t i = 0; i < n; ++i) a = std::max(a, std::fabs(x[i]));
  return a;
}

/// |e4m3(y) - y| is at most half an ulp: 2^-4 |y| for normals, 2^-10 for subnormals.
double e4m3_error_bound(double y) { return std::max(std::fabs(y) * 0x1p-4, 0x1p-10); }

/// |e2m1(y) - y| for |y| <= 6: half the step of the binade y is in; beyond 6, saturation.
double e2m1_error_bound(double y) {
  const double a = std::fabs(y);
  if (a <= 2) return 0.25;
  if (a <= 4) return 0.5;
  if (a <= 6) return 1.0;
  return a - 6;
}

/// Expects `fn` to throw a moe::Error whose message contains `needle`.
template <class Fn>
void expect_error_naming(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no moe::Error thrown; expected one naming " << needle;
  } catch (const moe::Error& e) {
    EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
  }
}

// ---- FP8 per tensor -------------------------------------------------------------------

TEST(Fp8PerTensor, ScaleMapsAmaxTo448AndRoundTripsWithinHalfUlp) {
  const int64_t n = 4096;
  const std::vector<float> x = random_matrix(11, n, 64, 6);
  const float scale = fp8_per_tensor_scale(x.data(), n);
  EXPECT_EQ(scale, amax_of(x.data(), n) / 448.0f);
  std::vector<uint8_t> q(n, kPoisonCode);
  quantize_fp8_per_tensor(x.data(), n, scale, q.data());
  int saturated = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(q[i], fmt::float_to_e4m3(x[i] / scale)) << i;
    const double deq = static_cast<double>(fmt::e4m3_to_float(q[i])) * scale;
    ASSERT_LE(std::fabs(deq - x[i]), e4m3_error_bound(x[i] / scale) * scale * (1 + 1e-6)) << i;
    saturated += (q[i] & 0x7F) == 0x7E;
  }
  EXPECT_GE(saturated, 1);  // the amax element
}

TEST(Fp8PerTensor, ZeroTensorUsesScaleFloorAndNaNIsNamed) {
  std::vector<float> x(10, 0.0f);
  EXPECT_EQ(fp8_per_tensor_scale(x.data(), 10), 1e-12f / 448.0f);
  x[5] = kNaN;
  expect_error_naming([&] { fp8_per_tensor_scale(x.data(), 10); }, "x[5]");
  std::vector<uint8_t> q(10);
  expect_error_naming([&] { quantize_fp8_per_tensor(x.data(), 10, 1.0f, q.data()); }, "x[5]");
  EXPECT_THROW(quantize_fp8_per_tensor(x.data(), 4, 0.0f, q.data()), moe::Error);
}

// ---- FP8 128x128 weight blocks --------------------------------------------------------

TEST(Fp8BlockWeight, PartialEdgeBlocksZeroBlockAndRoundTrip) {
  const int64_t n = 300, k = 200;  // blocks [3, 2]; the last row and column of blocks partial
  std::vector<float> w = random_matrix(12, n * k, 40, 8);
  for (int64_t r = 256; r < n; ++r) {
    for (int64_t c = 128; c < k; ++c) w[r * k + c] = 0.0f;  // the corner block is all zero
  }
  std::vector<uint8_t> q(n * k, kPoisonCode);
  std::vector<float> scales(3 * 2, kNaN);
  quantize_fp8_block_weight(w.data(), n, k, q.data(), scales.data());
  std::vector<float> deq(n * k, kNaN);
  dequantize_fp8_block_weight(q.data(), scales.data(), n, k, deq.data());

  for (int64_t rb = 0; rb < 3; ++rb) {
    for (int64_t cb = 0; cb < 2; ++cb) {
      float amax = 0;
      for (int64_t r = rb * 128; r < std::min(n, rb * 128 + 128); ++r) {
        for (int64_t c = cb * 128; c < std::min(k, cb * 128 + 128); ++c) {
          amax = std::max(amax, std::fabs(w[r * k + c]));
        }
      }
      const float s = scales[rb * 2 + cb];
      ASSERT_EQ(s, std::max(amax, 1e-12f) / 448.0f) << rb << "," << cb;
      for (int64_t r = rb * 128; r < std::min(n, rb * 128 + 128); ++r) {
        for (int64_t c = cb * 128; c < std::min(k, cb * 128 + 128); ++c) {
          const float x = w[r * k + c];
          ASSERT_EQ(q[r * k + c], fmt::float_to_e4m3(x / s)) << r << "," << c;
          ASSERT_EQ(deq[r * k + c], fmt::e4m3_to_float(q[r * k + c]) * s);
          ASSERT_LE(std::fabs(deq[r * k + c] - x), e4m3_error_bound(x / s) * s * (1 + 1e-6))
              << r << "," << c;
        }
      }
    }
  }
  EXPECT_EQ(scales[2 * 2 + 1], 1e-12f / 448.0f);
  EXPECT_EQ(q[299 * k + 199], 0x00);
}

// ---- FP8 1x128 activation groups ------------------------------------------------------

TEST(Fp8Act1x128, HandWorkedGroupsWithAndWithoutPow2) {
  // One token, k = 300: groups of 128, 128 and a partial 44.
  const int64_t k = 300;
  std::vector<float> x(k, 0.0f);
  for (int64_t c = 3; c < 128; ++c) x[c] = 0.001f * static_cast<float>(c % 7);  // < amax
  x[0] = 3.0f;                                                                  // group 0: amax 3
  x[1] = -1.0f;
  x[2] = 0.01f;
  x[128] = 5e-5f;  // group 1: amax below the 1e-4 floor
  x[129] = -2e-5f;
  x[256] = 56.0f;  // group 2: amax 56, s = 1/8 exactly
  x[257] = 1.0f;

  std::vector<uint8_t> q(k, kPoisonCode);
  std::vector<float> s(3, kNaN);
  quantize_fp8_act_1x128(x.data(), 1, k, /*pow2_scale=*/false, q.data(), s.data());
  EXPECT_EQ(s[0], 3.0f / 448.0f);
  EXPECT_EQ(s[1], 1e-4f / 448.0f);
  EXPECT_EQ(s[2], 0.125f);
  EXPECT_EQ(q[0], 0x7E);    // 448
  EXPECT_EQ(q[1], 0xF1);    // -149.33 -> -144
  EXPECT_EQ(q[2], 0x3C);    // 1.4933 -> 1.5
  EXPECT_EQ(q[128], 0x76);  // 224
  EXPECT_EQ(q[256], 0x7E);  // 448
  EXPECT_EQ(q[257], 0x50);  // 8

  quantize_fp8_act_1x128(x.data(), 1, k, /*pow2_scale=*/true, q.data(), s.data());
  EXPECT_EQ(s[0], 0x1p-7f);   // 3/448 = 0.0067 -> 2^-7
  EXPECT_EQ(s[1], 0x1p-22f);  // 1e-4/448 = 2.2e-7 -> 2^-22
  EXPECT_EQ(s[2], 0.125f);    // already a power of two: unchanged
  EXPECT_EQ(q[0], 0x7C);      // 384
  EXPECT_EQ(q[1], 0xF0);      // -128
  EXPECT_EQ(q[2], 0x3A);      // 1.28 -> 1.25
  EXPECT_EQ(q[128], 0x75);    // 209.7 -> 208
  EXPECT_EQ(q[256], 0x7E);
  EXPECT_EQ(q[257], 0x50);
}

TEST(Fp8Act1x128, RoundTripAndPow2ScaleIsTheNextPowerOfTwo) {
  const int64_t t = 5, k = 520;  // a partial last group of 8
  const std::vector<float> x = random_matrix(13, t * k, 128, 10);
  const int64_t g = 5;
  for (bool pow2 : {false, true}) {
    std::vector<uint8_t> q(t * k, kPoisonCode);
    std::vector<float> s(t * g, kNaN), deq(t * k, kNaN);
    quantize_fp8_act_1x128(x.data(), t, k, pow2, q.data(), s.data());
    dequantize_fp8_act_1x128(q.data(), s.data(), t, k, deq.data());
    for (int64_t row = 0; row < t; ++row) {
      for (int64_t grp = 0; grp < g; ++grp) {
        const int64_t c0 = grp * 128, c1 = std::min(k, c0 + 128);
        const float plain = std::max(amax_of(&x[row * k + c0], c1 - c0), 1e-4f) / 448.0f;
        const float sc = s[row * g + grp];
        if (pow2) {
          int e = 0;
          ASSERT_EQ(std::frexp(sc, &e), 0.5f);  // a power of two
          ASSERT_GE(sc, plain);
          ASSERT_LT(sc, 2 * plain);
        } else {
          ASSERT_EQ(sc, plain);
        }
        for (int64_t c = c0; c < c1; ++c) {
          const float v = x[row * k + c];
          ASSERT_LE(std::fabs(deq[row * k + c] - v), e4m3_error_bound(v / sc) * sc * (1 + 1e-6));
        }
      }
    }
  }
}

// ---- NVFP4 ----------------------------------------------------------------------------

TEST(Nvfp4, HandWorkedBlocks) {
  const int64_t n = 2, k = 32;
  std::vector<float> x(n * k, 0.0f);
  // Row 0, block 0: the tensor amax 6 -> G = 448, SF = e4m3(448) = 448, q = e2m1(x).
  x[0] = 6.0f, x[1] = -3.0f, x[2] = 1.5f, x[3] = 0.7f;
  // Row 0, block 1: amax 1 -> SF = e4m3(448 / 6 = 74.67) = 72 (0x69); q = e2m1(x * 448 / 72).
  const float b1[8] = {1.0f, 0.5f, -0.25f, 0.4f, 0.6f, 0.05f, 0.03f, -1.0f};
  for (int j = 0; j < 8; ++j) x[16 + j] = b1[j];
  // Row 1, block 0: amax 1e-6 -> G * amax / 6 = 7.5e-5, below half of e4m3's 2^-9: SF = 0.
  x[k + 0] = 1e-6f, x[k + 1] = -5e-7f;
  // Row 1, block 1: all zero.

  const float g = nvfp4_global_scale(x.data(), n * k);
  EXPECT_EQ(g, 448.0f);
  std::vector<uint8_t> q(n * k / 2, 0xEE), sf(n * 2, kPoisonCode);
  quantize_nvfp4(x.data(), n, k, g, q.data(), sf.data());
  EXPECT_EQ(sf, (std::vector<uint8_t>{0x7E, 0x69, 0x00, 0x00}));
  // Codes: block 0 [6, -3, 1.5, 0.5, 0...] = [7, D, 3, 1]; block 1: 6.22 -> 6, 3.11 -> 3,
  // -1.56 -> -1.5, 2.49 -> 2, 3.73 -> 4, 0.31 -> 0.5, 0.19 -> 0, -6.22 -> -6.
  const std::vector<uint8_t> want = {0xD7, 0x13, 0, 0, 0, 0, 0, 0, 0x57, 0x4B, 0x16,
                                     0xF0, 0,    0, 0, 0, 0, 0, 0, 0,    0,    0,
                                     0,    0,    0, 0, 0, 0, 0, 0, 0,    0};
  EXPECT_EQ(q, want);

  std::vector<float> deq(n * k, kNaN);
  dequantize_nvfp4(q.data(), sf.data(), n, k, g, deq.data());
  EXPECT_EQ(deq[0], 6.0f);
  EXPECT_EQ(deq[3], 0.5f);
  EXPECT_EQ(deq[16], 6.0f * 72.0f / 448.0f);
  EXPECT_EQ(deq[18], -1.5f * 72.0f / 448.0f);
  EXPECT_EQ(deq[22], 0.0f);
  EXPECT_EQ(deq[k + 0], 0.0f);
}

TEST(Nvfp4, OrderOfFloatOperationsIsPinned) {
  // Inputs found by search where another order of the same float operations rounds to a
  // different code: SF = e4m3((G * amax) / 6), not G * (amax / 6); q = e2m1((x * G) / SF),
  // not x * (G / SF). With G = 448:
  //  block 0: amax 6 (sets G).
  //  block 1: amax 0x1.724924p-7: (G * amax) / 6 = 0.84375, a tie -> 0.875 (0x36);
  //           G * (amax / 6) is one ulp lower -> 0.8125 (0x35).
  //  block 2: amax 1 -> SF = 72; x = 0x1.9b6db8p-3: (x * G) / 72 = 1.25, a tie -> 1.0 (code 2);
  //           x * (G / 72) is one ulp higher -> 1.5 (code 3). Likewise 2.5 -> 2, 5 -> 4.
  const int64_t k = 48;
  std::vector<float> x(k, 0.0f);
  x[0] = 6.0f;
  x[16] = 0x1.724924p-7f;
  x[32] = 1.0f, x[33] = 0x1.9b6db8p-3f, x[34] = 0x1.9b6db8p-2f, x[35] = 0x1.9b6db8p-1f;
  const float g = nvfp4_global_scale(x.data(), k);
  ASSERT_EQ(g, 448.0f);
  std::vector<uint8_t> q(k / 2, 0xEE), sf(3, kPoisonCode);
  quantize_nvfp4(x.data(), 1, k, g, q.data(), sf.data());
  EXPECT_EQ(sf, (std::vector<uint8_t>{0x7E, 0x36, 0x69}));
  EXPECT_EQ(q[16], fmt::e2m1_pack(7, 2));  // [6.22 -> 6, 1.25 -> 1]
  EXPECT_EQ(q[17], fmt::e2m1_pack(4, 6));  // [2.5 -> 2, 5 -> 4]
}

TEST(Nvfp4, ZeroTensorHasUnitGlobalScaleAndZeroCodes) {
  std::vector<float> x(64, 0.0f);
  const float g = nvfp4_global_scale(x.data(), 64);
  EXPECT_EQ(g, 1.0f);
  std::vector<uint8_t> q(32, 0xEE), sf(4, kPoisonCode);
  quantize_nvfp4(x.data(), 2, 32, g, q.data(), sf.data());
  EXPECT_EQ(sf, std::vector<uint8_t>(4, 0));
  EXPECT_EQ(q, std::vector<uint8_t>(32, 0));
}

TEST(Nvfp4, RoundTripWithinHalfStepPerBlock) {
  const int64_t n = 16, k = 512;
  // Magnitudes within 2^4 of each other keep every SF an e4m3 normal.
  const std::vector<float> x = random_matrix(14, n * k, 16, 4);
  const float g = nvfp4_global_scale(x.data(), n * k);
  EXPECT_EQ(g, 2688.0f / amax_of(x.data(), n * k));
  std::vector<uint8_t> q(n * k / 2, 0xEE), sf(n * k / 16, kPoisonCode);
  std::vector<float> deq(n * k, kNaN);
  quantize_nvfp4(x.data(), n, k, g, q.data(), sf.data());
  dequantize_nvfp4(q.data(), sf.data(), n, k, g, deq.data());
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t b = 0; b < k / 16; ++b) {
      const float amax = amax_of(&x[row * k + b * 16], 16);
      const uint8_t code = sf[row * (k / 16) + b];
      ASSERT_EQ(code, fmt::float_to_e4m3((g * amax) / 6.0f));
      const double sf_value = fmt::e4m3_to_float(code);
      ASSERT_GT(sf_value, 0);
      for (int64_t c = b * 16; c < b * 16 + 16; ++c) {
        const double y = x[row * k + c] * g / sf_value;
        ASSERT_LE(std::fabs(y), 6.0 / (1 - 0x1p-4));  // SF is within 2^-4 of G * amax / 6
        const double err = std::fabs(deq[row * k + c] - x[row * k + c]);
        // Slack for the two float roundings, (x * G) / SF and (q * SF) / G.
        const double slack = 0x1p-20 * std::fabs(x[row * k + c]);
        ASSERT_LE(err, e2m1_error_bound(y) * sf_value / g + slack) << row << "," << c;
      }
    }
  }
}

TEST(Nvfp4, Preconditions) {
  std::vector<float> x(2 * 48, 1.0f);
  std::vector<uint8_t> q(48), sf(6);
  EXPECT_THROW(quantize_nvfp4(x.data(), 2, 24, 1.0f, q.data(), sf.data()), moe::Error);
  EXPECT_THROW(quantize_nvfp4(x.data(), 2, 48, 0.0f, q.data(), sf.data()), moe::Error);
  x[48 + 17] = kNaN;
  expect_error_naming([&] { quantize_nvfp4(x.data(), 2, 48, 1.0f, q.data(), sf.data()); },
                      "x[1, 17]");
  expect_error_naming([&] { nvfp4_global_scale(x.data(), 96); }, "x[65]");
}

// ---- MX ---------------------------------------------------------------------------------

TEST(MxScale, FloorAndRceilOnHandPickedAmax) {
  using enum MxElem;
  using enum MxScaleRule;
  struct Case {
    MxElem elem;
    float amax;
    int floor_code, rceil_code;
  };
  // e2m1: FLOOR X = 2^(floor(log2 amax) - 2); RCEIL X = 2^ceil(log2(amax / 6)).
  // e4m3: FLOOR X = 2^(floor(log2 amax) - 8); RCEIL X = 2^ceil(log2(amax / 448)).
  const Case cases[] = {
      {kE2M1, 6.0f, 127, 127},    // fits both
      {kE2M1, 6.1f, 127, 128},    // FLOOR saturates 6.1 -> 6; RCEIL doubles X
      {kE2M1, 7.9f, 127, 128},    //
      {kE2M1, 8.0f, 128, 128},    //
      {kE2M1, 4.0f, 127, 127},    //
      {kE2M1, 3.5f, 126, 127},    // FLOOR X = 1/2: 3.5 -> 7 saturates to 6
      {kE2M1, 1.0f, 125, 125},    //
      {kE4M3, 448.0f, 127, 127},  //
      {kE4M3, 449.0f, 127, 128},  //
      {kE4M3, 511.0f, 127, 128},  //
      {kE4M3, 512.0f, 128, 128},  //
      {kE4M3, 255.0f, 126, 127},  //
      {kE4M3, 256.0f, 127, 127},  //
      {kE4M3, 1.0f, 119, 119},    //
      {kE2M1, 0.0f, 0, 0},        // zero block: 2^-127
      {kE4M3, 0.0f, 0, 0},
      {kE2M1, 0x1p-126f, 0, 0},                              // 2^-128 clamps to 2^-127
      {kE2M1, 0x1p-124f, 1, 1},                              // 2^-126 and 2^ceil(-126.58)
      {kE4M3, std::numeric_limits<float>::max(), 246, 247},  // 2^119; 2^ceil(119.19)
      {kE2M1, std::numeric_limits<float>::max(), 252, 253},  // 2^125; 2^ceil(125.42)
  };
  for (const Case& c : cases) {
    EXPECT_EQ(mx_scale_code(c.elem, kFloor, c.amax), c.floor_code) << c.amax;
    EXPECT_EQ(mx_scale_code(c.elem, kRceil, c.amax), c.rceil_code) << c.amax;
  }
  EXPECT_THROW(mx_scale_code(kE2M1, kFloor, kNaN), moe::Error);
}

TEST(MxScale, RceilIsFloorOrTwiceFloor) {
  std::mt19937 rng(15);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> ex(-100, 100);
  for (int i = 0; i < 100000; ++i) {
    const float amax = std::ldexp(mant(rng), ex(rng));
    for (MxElem elem : {MxElem::kE2M1, MxElem::kE4M3}) {
      const int f = mx_scale_code(elem, MxScaleRule::kFloor, amax);
      const int r = mx_scale_code(elem, MxScaleRule::kRceil, amax);
      ASSERT_TRUE(r == f || r == f + 1) << amax;
      // RCEIL: the smallest X with amax <= max_elem * X.
      const double max_elem = elem == MxElem::kE2M1 ? 6.0 : 448.0;
      ASSERT_LE(amax, max_elem * std::ldexp(1.0, r - 127)) << amax;
      ASSERT_GT(amax, max_elem * std::ldexp(1.0, r - 128)) << amax;
    }
  }
}

TEST(Mx, Fp4BlockUnderFloorAndRceil) {
  // amax 7.9: FLOOR X = 1 (7.9 saturates to 6), RCEIL X = 2.
  std::vector<float> x(32, 0.0f);
  x[0] = 7.9f, x[1] = 3.0f, x[2] = -1.0f, x[3] = 0.7f;
  std::vector<uint8_t> q(16, 0xEE), s(1, 0xEE);
  std::vector<float> deq(32, kNaN);

  quantize_mx(MxElem::kE2M1, MxScaleRule::kFloor, x.data(), 1, 32, q.data(), s.data());
  EXPECT_EQ(s[0], 127);
  EXPECT_EQ(q[0], 0x57);  // [6, 3]
  EXPECT_EQ(q[1], 0x1A);  // [-1, 0.5]
  EXPECT_EQ(q[2], 0x00);
  dequantize_mx(MxElem::kE2M1, q.data(), s.data(), 1, 32, deq.data());
  EXPECT_EQ((std::vector<float>(deq.begin(), deq.begin() + 5)),
            (std::vector<float>{6.0f, 3.0f, -1.0f, 0.5f, 0.0f}));

  quantize_mx(MxElem::kE2M1, MxScaleRule::kRceil, x.data(), 1, 32, q.data(), s.data());
  EXPECT_EQ(s[0], 128);
  EXPECT_EQ(q[0], 0x36);  // [3.95 -> 4, 1.5]
  EXPECT_EQ(q[1], 0x19);  // [-0.5, 0.35 -> 0.5]
  dequantize_mx(MxElem::kE2M1, q.data(), s.data(), 1, 32, deq.data());
  EXPECT_EQ((std::vector<float>(deq.begin(), deq.begin() + 5)),
            (std::vector<float>{8.0f, 3.0f, -1.0f, 1.0f, 0.0f}));
}

TEST(Mx, ScaleBytesForAmax6And61And79) {
  std::vector<float> x(96, 0.25f);
  x[5] = -6.0f, x[32 + 9] = 6.1f, x[64 + 31] = -7.9f;
  std::vector<uint8_t> q(48), s(3, 0xEE);
  quantize_mx(MxElem::kE2M1, MxScaleRule::kFloor, x.data(), 1, 96, q.data(), s.data());
  EXPECT_EQ(s, (std::vector<uint8_t>{127, 127, 127}));
  EXPECT_EQ(fmt::e2m1_high(q[(64 + 31) / 2]), 0xF);  // -7.9 saturates to -6 at X = 1
  quantize_mx(MxElem::kE2M1, MxScaleRule::kRceil, x.data(), 1, 96, q.data(), s.data());
  EXPECT_EQ(s, (std::vector<uint8_t>{127, 128, 128}));
  EXPECT_EQ(fmt::e2m1_high(q[(64 + 31) / 2]), 0xE);  // -3.95 -> -4 at X = 2
}

TEST(Mx, Fp8BlockUnderFloorAndRceil) {
  std::vector<float> x(32, 0.0f);
  x[0] = 500.0f, x[1] = -3.0f;
  std::vector<uint8_t> q(32, kPoisonCode), s(1, 0xEE);
  quantize_mx(MxElem::kE4M3, MxScaleRule::kFloor, x.data(), 1, 32, q.data(), s.data());
  EXPECT_EQ(s[0], 127);
  EXPECT_EQ(q[0], 0x7E);  // 500 saturates to 448
  EXPECT_EQ(q[1], 0xC4);  // -3
  EXPECT_EQ(q[2], 0x00);
  quantize_mx(MxElem::kE4M3, MxScaleRule::kRceil, x.data(), 1, 32, q.data(), s.data());
  EXPECT_EQ(s[0], 128);
  EXPECT_EQ(q[0], 0x78);  // 250 -> 256
  EXPECT_EQ(q[1], 0xBC);  // -1.5
  std::vector<float> deq(32, kNaN);
  dequantize_mx(MxElem::kE4M3, q.data(), s.data(), 1, 32, deq.data());
  EXPECT_EQ(deq[0], 512.0f);
  EXPECT_EQ(deq[1], -3.0f);
}

TEST(Mx, RoundTripWithinBoundsForEveryElementAndRule) {
  const int64_t n = 8, k = 256;
  std::vector<float> x = random_matrix(16, n * k, 32, 20);
  for (int64_t c = 64; c < 96; ++c) x[3 * k + c] = 0.0f;  // one all-zero block
  for (MxElem elem : {MxElem::kE2M1, MxElem::kE4M3}) {
    const bool fp4 = elem == MxElem::kE2M1;
    const double max_elem = fp4 ? 6.0 : 448.0;
    for (MxScaleRule rule : {MxScaleRule::kFloor, MxScaleRule::kRceil}) {
      std::vector<uint8_t> q(fp4 ? n * k / 2 : n * k, 0xEE), s(n * k / 32, 0xFF);
      std::vector<float> deq(n * k, kNaN);
      quantize_mx(elem, rule, x.data(), n, k, q.data(), s.data());
      dequantize_mx(elem, q.data(), s.data(), n, k, deq.data());
      for (int64_t row = 0; row < n; ++row) {
        for (int64_t b = 0; b < k / 32; ++b) {
          const uint8_t code = s[row * (k / 32) + b];
          ASSERT_EQ(code, mx_scale_code(elem, rule, amax_of(&x[row * k + b * 32], 32)));
          const double scale = std::ldexp(1.0, code - 127);
          for (int64_t c = b * 32; c < b * 32 + 32; ++c) {
            const double y = x[row * k + c] / scale;
            // RCEIL never saturates; FLOOR keeps |y| below 2^(emax + 1).
            ASSERT_LE(std::fabs(y), rule == MxScaleRule::kRceil ? max_elem : (fp4 ? 8.0 : 512.0));
            const double bound =
                (fp4 ? e2m1_error_bound(y)
                     : (std::fabs(y) > 448 ? std::fabs(y) - 448 : e4m3_error_bound(y))) *
                scale;
            const double slack = 0x1p-20 * std::fabs(x[row * k + c]);
            ASSERT_LE(std::fabs(deq[row * k + c] - x[row * k + c]), bound + slack)
                << row << "," << c;
          }
        }
      }
      EXPECT_EQ(s[3 * (k / 32) + 2], 0);  // the zero block: 2^-127
      EXPECT_EQ(deq[3 * k + 70], 0.0f);
    }
  }
}

TEST(Mx, Preconditions) {
  std::vector<float> x(2 * 64, 1.0f);
  std::vector<uint8_t> q(128), s(4);
  EXPECT_THROW(quantize_mx(MxElem::kE2M1, MxScaleRule::kFloor, x.data(), 2, 48, q.data(), s.data()),
               moe::Error);
  EXPECT_THROW(dequantize_mx(MxElem::kE4M3, q.data(), s.data(), 2, 40, x.data()), moe::Error);
  x[64 + 37] = kNaN;
  expect_error_naming(
      [&] { quantize_mx(MxElem::kE4M3, MxScaleRule::kRceil, x.data(), 2, 64, q.data(), s.data()); },
      "x[1, 37]");
}

// ---- 128x4 swizzle --------------------------------------------------------------------

TEST(Swizzle128x4, PaddedSizesAndHandPickedOffsets) {
  EXPECT_EQ(swizzle_128x4_rows(1), 128);
  EXPECT_EQ(swizzle_128x4_rows(128), 128);
  EXPECT_EQ(swizzle_128x4_rows(129), 256);
  EXPECT_EQ(swizzle_128x4_cols(1), 4);
  EXPECT_EQ(swizzle_128x4_cols(4), 4);
  EXPECT_EQ(swizzle_128x4_cols(5), 8);
  EXPECT_EQ(swizzle_128x4_offset(0, 0, 4), 0);
  EXPECT_EQ(swizzle_128x4_offset(0, 1, 4), 1);
  EXPECT_EQ(swizzle_128x4_offset(1, 0, 4), 16);
  EXPECT_EQ(swizzle_128x4_offset(31, 0, 4), 496);
  EXPECT_EQ(swizzle_128x4_offset(32, 0, 4), 4);
  EXPECT_EQ(swizzle_128x4_offset(64, 2, 4), 10);
  EXPECT_EQ(swizzle_128x4_offset(96, 1, 4), 13);
  EXPECT_EQ(swizzle_128x4_offset(127, 3, 4), 511);
  EXPECT_EQ(swizzle_128x4_offset(0, 4, 8), 512);              // second k tile
  EXPECT_EQ(swizzle_128x4_offset(128, 0, 8), 1024);           // second m tile, after 2 k tiles
  EXPECT_EQ(swizzle_128x4_offset(130, 5, 7), 1536 + 32 + 1);  // tile 3, row 2, col 1
  EXPECT_THROW(swizzle_128x4_offset(0, 8, 7), moe::Error);
}

TEST(Swizzle128x4, OffsetIsABijectionOnPaddedSizes) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {130, 6}, {256, 8}, {300, 9}}) {
    const int64_t pr = swizzle_128x4_rows(rows), pc = swizzle_128x4_cols(cols);
    std::vector<int> hits(pr * pc, 0);
    for (int64_t m = 0; m < pr; ++m) {
      for (int64_t k = 0; k < pc; ++k) {
        const int64_t off = swizzle_128x4_offset(m, k, cols);
        ASSERT_GE(off, 0);
        ASSERT_LT(off, pr * pc);
        ++hits[off];
      }
    }
    for (int h : hits) ASSERT_EQ(h, 1) << rows << "x" << cols;
  }
}

TEST(Swizzle128x4, UnswizzleInvertsSwizzleAndPaddingIsZero) {
  const int64_t rows = 300, cols = 7;
  std::mt19937 rng(17);
  std::vector<uint8_t> s(rows * cols);
  for (auto& v : s) v = static_cast<uint8_t>(1 + rng() % 255);  // never 0
  const int64_t padded = swizzle_128x4_rows(rows) * swizzle_128x4_cols(cols);
  std::vector<uint8_t> sw(padded, 0xEE), back(rows * cols, 0);
  swizzle_128x4(s.data(), rows, cols, sw.data());
  unswizzle_128x4(sw.data(), rows, cols, back.data());
  EXPECT_EQ(back, s);
  std::set<int64_t> used;
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t k = 0; k < cols; ++k) {
      used.insert(swizzle_128x4_offset(m, k, cols));
      ASSERT_EQ(sw[swizzle_128x4_offset(m, k, cols)], s[m * cols + k]);
    }
  }
  for (int64_t off = 0; off < padded; ++off) {
    if (!used.count(off)) {
      ASSERT_EQ(sw[off], 0) << off;
    }
  }
}

}  // namespace
}  // namespace moe::quant
