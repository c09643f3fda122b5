// Element and scale codecs, bit-exact to their specs (../shared/facts/formats.md).
// The one place that knows how bf16, f16, e4m3, e2m1 and ue8m0 encode numbers; every
// quantizer, dequantizer and kernel test builds on these.
//
// Rounding of every encoder: round to nearest, ties to even. Saturating formats (e4m3,
// e2m1) clamp to their largest finite magnitude; NaN input encodes as the format's NaN
// (e4m3: 0x7F with the sign kept; e2m1 has none: NaN inputs throw in the quantizers, and
// the scalar encoder returns +0 -- callers check first).
#pragma once

#include <cstdint>

namespace moe::fmt {

// ---- 16-bit floats ------------------------------------------------------------------
float bf16_to_float(uint16_t bits);
uint16_t float_to_bf16(float x);  ///< RNE; NaN stays NaN (quiet)
float f16_to_float(uint16_t bits);
uint16_t float_to_f16(float x);  ///< RNE, overflow to Inf, subnormals exact
/// Rounds a float to the nearest bf16 / f16 value (as a float).
inline float round_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }
inline float round_f16(float x) { return f16_to_float(float_to_f16(x)); }

// ---- E4M3 ("fn"): bias 7, max 448, no Inf, NaN = S.1111.111 ---------------------------
inline constexpr float kE4M3Max = 448.0f;
float e4m3_to_float(uint8_t code);
uint8_t float_to_e4m3(float x);  ///< RNE, saturating to +-448

// ---- E2M1 (fp4): bias 1, magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} ----------------------
inline constexpr float kE2M1Max = 6.0f;
float e2m1_to_float(uint8_t nibble);  ///< low 4 bits used
uint8_t float_to_e2m1(float x);       ///< RNE, saturating to +-6; returns a nibble
/// Two elements of a packed byte: low nibble = element 2i, high nibble = element 2i+1.
inline uint8_t e2m1_pack(uint8_t even, uint8_t odd) {
  return static_cast<uint8_t>((even & 0xF) | ((odd & 0xF) << 4));
}
inline uint8_t e2m1_low(uint8_t byte) { return byte & 0xF; }
inline uint8_t e2m1_high(uint8_t byte) { return byte >> 4; }

// ---- UE8M0: 2^(e-127), e in [0, 254], 0xFF = NaN, no zero -----------------------------
float ue8m0_to_float(uint8_t code);  ///< NaN for 0xFF
/// Encodes an exact power of two 2^p, p in [-127, 127]; throws moe::Error otherwise.
uint8_t pow2_to_ue8m0(float x);

}  // namespace moe::fmt
