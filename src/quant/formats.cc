// Element and scale codecs (see formats.h for the contract).
//
// Every encoder works on the bits of the float: it splits |x| into a 24-bit significand and
// an exponent, shifts the significand down to the target's precision at that exponent and
// rounds the shifted-out bits once, to nearest with ties to even. A carry out of the
// significand moves into the exponent field by itself, because the code is formed as
// (exponent << mantissa_bits) | mantissa before the increment. No float arithmetic touches
// the value, so nothing is rounded twice.
#include "quant/formats.h"

#include <bit>
#include <cmath>
#include <limits>

#include "moe/errors.h"

namespace moe::fmt {
namespace {

constexpr uint32_t kF32SignMask = 0x80000000u;
constexpr uint32_t kF32AbsMask = 0x7FFFFFFFu;
constexpr uint32_t kF32Inf = 0x7F800000u;
constexpr uint32_t kF32MantMask = 0x007FFFFFu;
constexpr int kF32Bias = 127;

uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
float float_of(uint32_t bits) { return std::bit_cast<float>(bits); }

/// v >> shift, rounded to nearest with ties to even (shift >= 0; any shift is allowed).
uint32_t shift_right_rne(uint64_t v, int shift) {
  if (shift == 0) return static_cast<uint32_t>(v);
  if (shift > 40) return 0;  // v < 2^25: far below half of one unit
  const uint64_t kept = v >> shift;
  const uint64_t rest = v & ((uint64_t{1} << shift) - 1);
  const uint64_t half = uint64_t{1} << (shift - 1);
  const bool round_up = rest > half || (rest == half && (kept & 1));
  return static_cast<uint32_t>(kept + (round_up ? 1 : 0));
}

/// A finite, nonzero float magnitude as significand * 2^(exponent - 23), significand < 2^24
/// (the implicit bit included for normals).
struct Magnitude {
  uint32_t significand;
  int exponent;  // unbiased exponent of the leading bit position 23
};

Magnitude split(uint32_t abs_bits) {
  const int biased = static_cast<int>(abs_bits >> 23);
  const uint32_t mant = abs_bits & kF32MantMask;
  if (biased == 0) return {mant, 1 - kF32Bias};  // float subnormal
  return {mant | 0x800000u, biased - kF32Bias};
}

/// Encodes a finite magnitude into a format with `mant_bits` mantissa bits, exponent bias
/// `bias`, and subnormals below the minimum normal exponent 1 - bias. Returns the unsigned
/// code (exponent << mant_bits | mantissa), rounded once (RNE); the caller handles overflow.
uint32_t encode_magnitude(uint32_t abs_bits, int mant_bits, int bias) {
  if (abs_bits == 0) return 0;
  const Magnitude m = split(abs_bits);
  const int min_normal_exp = 1 - bias;
  if (m.exponent >= min_normal_exp && m.significand >= 0x800000u) {
    // Normal in the target: keep mant_bits of the fraction, exponent field = exponent + bias.
    const uint32_t field = static_cast<uint32_t>(m.exponent + bias) << mant_bits;
    const uint32_t frac = m.significand & kF32MantMask;
    const int shift = 23 - mant_bits;
    const uint64_t v = (uint64_t{field} << shift) | frac;  // code with `shift` extra bits
    return shift_right_rne(v, shift);
  }
  // Subnormal in the target: units of 2^(min_normal_exp - mant_bits).
  // value = significand * 2^(exponent - 23) = code * 2^(min_normal_exp - mant_bits)
  const int shift = (min_normal_exp - mant_bits) - (m.exponent - 23);
  return shift_right_rne(m.significand, shift);
}

}  // namespace

// ---- 16-bit floats ------------------------------------------------------------------

float bf16_to_float(uint16_t bits) { return float_of(uint32_t{bits} << 16); }

uint16_t float_to_bf16(float x) {
  const uint32_t bits = bits_of(x);
  if ((bits & kF32AbsMask) > kF32Inf) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // NaN: keep sign/payload, quiet
  }
  // bf16 is the top half of a float: round the low 16 bits away (a carry into the exponent
  // is the correct next binade, and rounds 0x7F7F8000.. up to Inf).
  return static_cast<uint16_t>(shift_right_rne(bits, 16));
}

float f16_to_float(uint16_t bits) {
  const uint32_t sign = uint32_t{bits & 0x8000u} << 16;
  const uint32_t exp = (bits >> 10) & 0x1Fu;
  const uint32_t mant = bits & 0x3FFu;
  if (exp == 0x1F) return float_of(sign | kF32Inf | (mant << 13));  // Inf / NaN
  if (exp == 0) {
    const float mag = std::ldexp(static_cast<float>(mant), -24);  // exact
    return sign ? -mag : mag;
  }
  return float_of(sign | ((exp - 15 + kF32Bias) << 23) | (mant << 13));
}

uint16_t float_to_f16(float x) {
  const uint32_t bits = bits_of(x);
  const uint16_t sign = static_cast<uint16_t>((bits & kF32SignMask) >> 16);
  const uint32_t abs_bits = bits & kF32AbsMask;
  if (abs_bits > kF32Inf) {
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs_bits & kF32MantMask) >> 13));
  }
  if (abs_bits == kF32Inf) return static_cast<uint16_t>(sign | 0x7C00u);
  if ((abs_bits >> 23) >= 16 + kF32Bias) return static_cast<uint16_t>(sign | 0x7C00u);
  // A code that rounds past 0x7BFF lands on 0x7C00 = Inf, which is f16's overflow rule.
  const uint32_t code = encode_magnitude(abs_bits, 10, 15);
  return static_cast<uint16_t>(sign | code);
}

// ---- E4M3 ---------------------------------------------------------------------------

float e4m3_to_float(uint8_t code) {
  const bool negative = code & 0x80;
  const int exp = (code >> 3) & 0xF;
  const int mant = code & 0x7;
  float mag;
  if (exp == 0xF && mant == 0x7) {
    mag = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    mag = std::ldexp(static_cast<float>(mant), -9);
  } else {
    mag = std::ldexp(static_cast<float>(8 + mant), exp - 7 - 3);
  }
  return negative ? -mag : mag;
}

uint8_t float_to_e4m3(float x) {
  const uint32_t bits = bits_of(x);
  const uint8_t sign = (bits & kF32SignMask) ? 0x80 : 0x00;
  const uint32_t abs_bits = bits & kF32AbsMask;
  if (abs_bits > kF32Inf) return sign | 0x7F;
  if (abs_bits >= bits_of(kE4M3Max)) return sign | 0x7E;  // saturate (Inf included)
  // Below 448 the rounded code is at most 0x7E (448 itself), so no NaN code can appear.
  return static_cast<uint8_t>(sign | encode_magnitude(abs_bits, 3, 7));
}

// ---- E2M1 ---------------------------------------------------------------------------

float e2m1_to_float(uint8_t nibble) {
  static constexpr float kValues[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                        -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  return kValues[nibble & 0xF];
}

uint8_t float_to_e2m1(float x) {
  const uint32_t bits = bits_of(x);
  const uint32_t abs_bits = bits & kF32AbsMask;
  if (abs_bits > kF32Inf) return 0;  // no NaN in e2m1 (see formats.h)
  const uint8_t sign = (bits & kF32SignMask) ? 0x8 : 0x0;
  if (abs_bits >= bits_of(kE2M1Max)) return sign | 0x7;  // saturate (Inf included)
  // Below 6 the rounded code is at most 0x7: the largest value rounding up is 5, to 6.
  return static_cast<uint8_t>(sign | encode_magnitude(abs_bits, 1, 1));
}

// ---- UE8M0 --------------------------------------------------------------------------

float ue8m0_to_float(uint8_t code) {
  if (code == 0xFF) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(code) - 127);  // 2^-127 is a float subnormal
}

uint8_t pow2_to_ue8m0(float x) {
  int exp = 0;
  const float frac = std::isfinite(x) ? std::frexp(x, &exp) : 0.0f;  // x = frac * 2^exp
  MOE_CHECK(frac == 0.5f, "pow2_to_ue8m0: ", x, " is not a positive power of two");
  const int p = exp - 1;
  MOE_CHECK(p >= -127 && p <= 127, "pow2_to_ue8m0: 2^", p, " is outside [2^-127, 2^127]");
  return static_cast<uint8_t>(p + 127);
}

}  // namespace moe::fmt
