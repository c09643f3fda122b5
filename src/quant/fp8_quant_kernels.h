// FP8 (e4m3) activation quantization on the GPU, bit for bit the CPU quantizers of
// quant/quantizers.h (the order of float operations is part of the contract):
//   1x128 groups   s = max(amax(group), 1e-4f) / 448.f  [-> 2^ceil(log2 s) when pow2_scale]
//                  q = e4m3(x / s)
//   per tensor     q = e4m3(x / scale)                   (scale read from device memory)
// with IEEE division, and e4m3 encoded exactly as fmt::float_to_e4m3 (round to nearest even,
// saturating to +-448, NaN -> 0x7F with its sign, values that round to zero keep their sign).
// Inputs are bf16, f16 or f32 rows; non-finite inputs give unspecified codes (the CPU
// quantizers reject them).
//
// Scale layouts of the 1x128 kernel (either may be omitted):
//   scales        f32 [rows, ceil(cols/128)]      token-major, the QuantizedInput contract
//   scales_gemm   f32 [ceil(cols/128), ld]         group-major, ld >= rows: cuBLASLt's
//                 VEC128_32F layout of a row-major [rows, cols] operand; columns [rows, ld)
//                 are written with 0 so that padded GEMM rows see finite scales.
//
// The device encoder (namespace device) is also exposed for kernels that quantize inside their
// own epilogue; it compiles for the host too, where CPU tests check it against the codec.
#pragma once

#include <cstdint>
#include <cstring>

#include "moe/dtype.h"

#ifdef __CUDACC__
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#endif

namespace moe::quant {

inline constexpr int kFp8GroupSize = 128;
inline constexpr float kFp8ActScaleFloor = 1e-4f;  // NOTE: must equal quantizers.cc
inline constexpr float kE4M3MaxFinite = 448.0f;

struct Fp8Quantize1x128Params {
  const void* x = nullptr;  // [rows, cols] bf16 / f16 / f32, row stride x_ld elements
  DType x_dtype = DType::kBF16;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t x_ld = 0;
  uint8_t* q = nullptr;  // e4m3 [rows, cols], row stride q_ld bytes
  int64_t q_ld = 0;
  float* scales = nullptr;       // [rows, ceil(cols/128)] or nullptr
  float* scales_gemm = nullptr;  // [ceil(cols/128), scales_gemm_ld] or nullptr
  int64_t scales_gemm_ld = 0;    // >= rows
  bool pow2_scale = false;
  bool pad_scales_gemm = true;          // false: columns [rows, ld) of scales_gemm left alone
  const int32_t* rows_limit = nullptr;  // optional device count: rows past it are skipped
  // Programmatic dependent launch: let the next kernel launch at this one's start instead of
  // once past its wait (its grid then runs beside the previous kernel's tail). Sound only where
  // nothing the next kernel reads before its own wait is written by this kernel or the one
  // before it (the grouped backend's FC2 after FC1: before its wait it reads the plan's offsets,
  // complete once FC1 is past its wait, and weights; ARCHITECTURE.md, anti-patterns).
  bool dependents_at_start = false;
};

/// Quantizes x into e4m3 1x128 groups (one warp per group). rows == 0 launches nothing.
void launch_fp8_quantize_1x128(const Fp8Quantize1x128Params& p, void* stream);

struct Fp8QuantizePerTensorParams {
  const void* x = nullptr;  // [rows, cols], row stride x_ld elements
  DType x_dtype = DType::kBF16;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t x_ld = 0;
  const float* scale = nullptr;  // device f32 [1]: the dequantization scale
  uint8_t* q = nullptr;          // e4m3 [rows, cols], row stride q_ld bytes
  int64_t q_ld = 0;
};

/// q = e4m3(x / *scale) element-wise. rows == 0 launches nothing.
void launch_fp8_quantize_per_tensor(const Fp8QuantizePerTensorParams& p, void* stream);

/// scales f32 [rows, groups] (token-major) -> out f32 [groups, out_ld] (group-major, the
/// layout of Fp8Quantize1x128Params::scales_gemm), columns [rows, out_ld) set to 0.
void launch_fp8_scales_to_gemm_layout(const float* scales, int64_t rows, int64_t groups, float* out,
                                      int64_t out_ld, void* stream);

/// The leading dimension cuBLASLt expects for the VEC128 / BLK128x128 scale tensors: their
/// inner dimension padded to a multiple of 4 floats (16 bytes).
constexpr int64_t fp8_scale_ld(int64_t inner) { return (inner + 3) / 4 * 4; }

// ---- Device encoder (also compiled for the host, so CPU tests check the same code) ------
#ifdef __CUDACC__
#define MOE_FP8_HD __host__ __device__ __forceinline__
#else
#define MOE_FP8_HD inline
#endif

namespace device {

MOE_FP8_HD uint32_t float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
#endif
}

MOE_FP8_HD float bits_float(uint32_t b) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
#endif
}

/// IEEE single division, rounded to nearest even (no fast-math approximation).
MOE_FP8_HD float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

/// v >> shift rounded to nearest, ties to even (formats.cc shift_right_rne).
MOE_FP8_HD uint32_t shift_right_rne(uint64_t v, int shift) {
  if (shift == 0) return static_cast<uint32_t>(v);
  if (shift > 40) return 0;
  const uint64_t kept = v >> shift;
  const uint64_t rest = v & ((uint64_t{1} << shift) - 1);
  const uint64_t half = uint64_t{1} << (shift - 1);
  const bool round_up = rest > half || (rest == half && (kept & 1));
  return static_cast<uint32_t>(kept + (round_up ? 1 : 0));
}

/// fmt::float_to_e4m3 as an integer algorithm (the host's and the reference for the device).
MOE_FP8_HD uint8_t float_to_e4m3_soft(float x) {
  constexpr uint32_t kAbsMask = 0x7FFFFFFFu, kInf = 0x7F800000u, kMant = 0x007FFFFFu;
  constexpr uint32_t kE4M3MaxBits = 0x43E00000u;  // 448.0f
  const uint32_t bits = float_bits(x);
  const uint8_t sign = (bits & 0x80000000u) ? 0x80 : 0x00;
  const uint32_t abs_bits = bits & kAbsMask;
  if (abs_bits > kInf) return sign | 0x7F;
  if (abs_bits >= kE4M3MaxBits) return sign | 0x7E;
  if (abs_bits == 0) return sign;
  // encode_magnitude(abs_bits, mant_bits = 3, bias = 7)
  const int biased = static_cast<int>(abs_bits >> 23);
  const uint32_t significand = biased == 0 ? (abs_bits & kMant) : ((abs_bits & kMant) | 0x800000u);
  const int exponent = biased == 0 ? -126 : biased - 127;
  constexpr int kMinNormalExp = -6;  // 1 - bias
  uint32_t code;
  if (exponent >= kMinNormalExp && significand >= 0x800000u) {
    const uint32_t field = static_cast<uint32_t>(exponent + 7) << 3;
    const uint64_t v = (uint64_t{field} << 20) | (significand & kMant);
    code = shift_right_rne(v, 20);
  } else {
    const int shift = (kMinNormalExp - 3) - (exponent - 23);
    code = shift_right_rne(significand, shift);
  }
  return static_cast<uint8_t>(sign | code);
}

/// fmt::float_to_e4m3 for device code. On the GPU the hardware conversion (cvt.rn.satfinite:
/// round to nearest even, +-inf and overflow saturate to +-448, the sign of zero kept) gives
/// the codes of the integer algorithm for every non-NaN input (tests/gpu_dense checks every
/// rounding boundary and 4M random floats); NaN keeps its sign as in the codec.
MOE_FP8_HD uint8_t float_to_e4m3(float x) {
#ifdef __CUDA_ARCH__
  if (isnan(x)) return (float_bits(x) & 0x80000000u) ? 0xFF : 0x7F;
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
#else
  return float_to_e4m3_soft(x);
#endif
}

/// The 1x128 group scale from the group's amax (quantize_fp8_act_1x128):
/// max(amax, 1e-4f) / 448.f, rounded up to a power of two when pow2_scale.
MOE_FP8_HD float fp8_group_scale(float amax, bool pow2_scale) {
  float s = div_rn(amax > kFp8ActScaleFloor ? amax : kFp8ActScaleFloor, kE4M3MaxFinite);
  if (pow2_scale) {
    // 2^ceil(log2 s); s is a positive normal float (>= 1e-4 / 448).
    const uint32_t b = float_bits(s);
    if ((b & 0x007FFFFFu) != 0) s = bits_float(((b >> 23) + 1) << 23);
  }
  return s;
}

/// Division by a 1x128 group's scale with one reciprocal per group, for the 1x128 quantizers'
/// operands: v a bf16 or f16 value, s = fp8_group_scale(amax, pow2) of the group's bf16 / f16
/// amax >= |v|. There divide(v, d) is div_rn(v, s) bit for bit wherever |v / s| >= 2^-24, and
/// below that (where e4m3 codes the quotient as +-0 either way) a value of v's sign that codes
/// the same -- tests/gpu_dense/fp8_group_divisor_test.cu checks both exhaustively (every such
/// pair of each format, both scale rules: ~10^9 each), so the e4m3 codes are the CPU
/// quantizer's. On the GPU: r = 1 / s from rcp.approx and one Newton step, once per group; per
/// value q = v r, the exact residual v - q s, then q + residual * r with v's sign: four
/// instructions where div.rn takes ~10 and a slow-path check (~10% of the fused FC1 epilogue's
/// stall samples, bench/NOTES.md eleventh session). Tiny quotients are not div_rn's (the
/// residual leaves the normal range: bf16 v = 1.9e-38, s = 2.6e-7 was an ulp off), nor are
/// operands outside that domain proven to round as div_rn.
struct GroupDivisor {
  float s;  // the group's scale
  float r;  // its reciprocal, refined (the device's)
};

MOE_FP8_HD GroupDivisor group_divisor(float s) {
#ifdef __CUDA_ARCH__
  float r0;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r0) : "f"(s));
  return {s, __fmaf_rn(__fmaf_rn(-s, r0, 1.0f), r0, r0)};
#else
  return {s, 1.0f / s};
#endif
}

/// v / d.s (see GroupDivisor for the domain and what it guarantees).
MOE_FP8_HD float divide(float v, const GroupDivisor& d) {
#ifdef __CUDA_ARCH__
  const float q = __fmul_rn(v, d.r);
  // +-0 keeps its sign (the residual step alone gives +0 for -0).
  return copysignf(__fmaf_rn(__fmaf_rn(-q, d.s, v), d.r, q), v);
#else
  return div_rn(v, d.s);
#endif
}

#ifdef __CUDACC__
/// A 1x128 group over 128 / kPerLane lanes of a warp, kPerLane consecutive elements per lane
/// (zero past the row): the group's scale (amax across those lanes: a whole warp at 4 per lane,
/// a half-warp at 8) into `scale`, and the lane's codes e4m3(v / scale), element i in byte i % 4
/// of packed[i / 4]. Every warp-wide 1x128 quantizer calls this one. kSixteenBit: the v are
/// bf16 or f16 values, divided through GroupDivisor (the same codes); else div_rn.
template <int kPerLane, bool kSixteenBit>
__device__ __forceinline__ void quantize_lanes_1x128(const float (&v)[kPerLane], bool pow2_scale,
                                                     float& scale,
                                                     uint32_t (&packed)[kPerLane / 4]) {
  static_assert(kPerLane == 4 || kPerLane == 8, "a warp or a half-warp per group");
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) amax = fmaxf(amax, fabsf(v[i]));
#pragma unroll
  for (int off = kFp8GroupSize / kPerLane / 2; off > 0; off /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
  }
  scale = fp8_group_scale(amax, pow2_scale);
  const GroupDivisor d = group_divisor(scale);
#pragma unroll
  for (int w = 0; w < kPerLane / 4; ++w) packed[w] = 0;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const float q = kSixteenBit ? divide(v[i], d) : div_rn(v[i], scale);
    packed[i / 4] |= uint32_t{float_to_e4m3(q)} << (8 * (i % 4));
  }
}

/// One warp's 1x128 group, 4 elements per lane (lane l: elements 4l .. 4l + 3).
template <bool kSixteenBit>
__device__ __forceinline__ uint32_t quantize_lane4_1x128(const float (&v)[4], bool pow2_scale,
                                                         float& scale) {
  uint32_t packed[1];
  quantize_lanes_1x128<4, kSixteenBit>(v, pow2_scale, scale, packed);
  return packed[0];
}

/// Two 1x128 groups a warp, 8 bf16 / f16 values per lane (lane l: elements 8 (l % 16) ..
/// 8 (l % 16) + 7 of its half-warp's group).
__device__ __forceinline__ uint2 quantize_lane8_1x128(const float (&v)[8], bool pow2_scale,
                                                      float& scale) {
  uint32_t packed[2];
  quantize_lanes_1x128<8, true>(v, pow2_scale, scale, packed);
  return make_uint2(packed[0], packed[1]);
}

/// A lane's kPerLane elements at a per-tensor scale: e4m3(div_rn(v, scale)), the codes of the
/// per-tensor quantizer, element i in byte i % 4 of packed[i / 4]. div_rn, not GroupDivisor:
/// a static scale bounds nothing, so quotients past 448 (saturating) are in the domain.
template <int kPerLane>
__device__ __forceinline__ void quantize_lanes_static(const float (&v)[kPerLane], float scale,
                                                      uint32_t (&packed)[kPerLane / 4]) {
  static_assert(kPerLane % 4 == 0, "whole 32-bit words of codes");
#pragma unroll
  for (int w = 0; w < kPerLane / 4; ++w) packed[w] = 0;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    packed[i / 4] |= uint32_t{float_to_e4m3(div_rn(v[i], scale))} << (8 * (i % 4));
  }
}
#endif

}  // namespace device

}  // namespace moe::quant
