// CPU quantizers and dequantizers of every block format (see quantizers.h for the contract).
//
// These are the numbers every GPU quantization kernel is checked against bit for bit, so
// each computes in a fixed order, in float, exactly as written in the header:
//   fp8 per tensor   s = max(amax, 1e-12) / 448               q = e4m3(x / s)
//   fp8 128x128      s = max(amax(block), 1e-12) / 448         q = e4m3(w / s)
//   fp8 1x128        s = max(amax(group), 1e-4) / 448 [-> 2^ceil(log2 s)]  q = e4m3(x / s)
//   nvfp4            SF = e4m3((G * amax(block)) / 6)         q = e2m1((x * G) / SF)
//   mx               X = 2^p from the rule (FLOOR or RCEIL)    q = elem(x / X)
// Non-finite inputs (NaN, Inf) are rejected with a moe::Error naming the element's index;
// they would make a scale meaningless.
#include "quant/quantizers.h"

#include <algorithm>
#include <cmath>

#include "moe/errors.h"
#include "quant/formats.h"

namespace moe::quant {
namespace {

constexpr int64_t kFp8Block = 128;
constexpr int64_t kNvfp4Block = 16;
constexpr int64_t kMxBlock = 32;
constexpr float kFp8WeightScaleFloor = 1e-12f;
constexpr float kFp8ActScaleFloor = 1e-4f;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_shape(const char* what, int64_t rows, int64_t cols) {
  MOE_CHECK(rows >= 0 && cols >= 0, what, ": negative shape [", rows, ", ", cols, "]");
}

/// Checks x[row, col] is finite; names it otherwise.
void check_finite(const char* what, float v, int64_t row, int64_t col) {
  MOE_CHECK(std::isfinite(v), what, ": x[", row, ", ", col, "] is ", v,
            " (non-finite input cannot be quantized)");
}

/// max |x| over x[r0:r1, c0:c1] of a row-major matrix with `ld` columns; checks finiteness.
float block_amax(const char* what, const float* x, int64_t ld, int64_t r0, int64_t r1, int64_t c0,
                 int64_t c1) {
  float amax = 0.0f;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) {
      const float v = x[r * ld + c];
      check_finite(what, v, r, c);
      amax = std::max(amax, std::fabs(v));
    }
  }
  return amax;
}

/// max |x| over x[0:n]; checks finiteness.
float vector_amax(const char* what, const float* x, int64_t n) {
  MOE_CHECK(n >= 0, what, ": negative size ", n);
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    MOE_CHECK(std::isfinite(x[i]), what, ": x[", i, "] is ", x[i],
              " (non-finite input cannot be quantized)");
    amax = std::max(amax, std::fabs(x[i]));
  }
  return amax;
}

/// The smallest power of two >= s (s > 0, finite), computed exactly: 2^ceil(log2(s)).
float pow2_ceil(float s) {
  int exp = 0;
  const float frac = std::frexp(s, &exp);  // s = frac * 2^exp, frac in [0.5, 1)
  return frac == 0.5f ? s : std::ldexp(1.0f, exp);
}

}  // namespace

// ---- FP8 per-tensor -------------------------------------------------------------------

float fp8_per_tensor_scale(const float* x, int64_t n) {
  const float amax = vector_amax("fp8_per_tensor_scale", x, n);
  return std::max(amax, kFp8WeightScaleFloor) / fmt::kE4M3Max;
}

void quantize_fp8_per_tensor(const float* x, int64_t n, float scale, uint8_t* q) {
  MOE_CHECK(n >= 0, "quantize_fp8_per_tensor: negative size ", n);
  MOE_CHECK(std::isfinite(scale) && scale > 0.0f, "quantize_fp8_per_tensor: scale ", scale,
            " must be positive and finite");
  for (int64_t i = 0; i < n; ++i) {
    MOE_CHECK(std::isfinite(x[i]), "quantize_fp8_per_tensor: x[", i, "] is ", x[i],
              " (non-finite input cannot be quantized)");
    q[i] = fmt::float_to_e4m3(x[i] / scale);
  }
}

// ---- FP8 128x128 weight blocks ----------------------------------------------------------

void quantize_fp8_block_weight(const float* w, int64_t n, int64_t k, uint8_t* q, float* scales) {
  check_shape("quantize_fp8_block_weight", n, k);
  const int64_t num_col_blocks = ceil_div(k, kFp8Block);
  for (int64_t rb = 0; rb < ceil_div(n, kFp8Block); ++rb) {
    const int64_t r0 = rb * kFp8Block, r1 = std::min(n, r0 + kFp8Block);
    for (int64_t cb = 0; cb < num_col_blocks; ++cb) {
      const int64_t c0 = cb * kFp8Block, c1 = std::min(k, c0 + kFp8Block);
      const float amax = block_amax("quantize_fp8_block_weight", w, k, r0, r1, c0, c1);
      const float s = std::max(amax, kFp8WeightScaleFloor) / fmt::kE4M3Max;
      scales[rb * num_col_blocks + cb] = s;  // [ceil(n/128), ceil(k/128)]
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) q[r * k + c] = fmt::float_to_e4m3(w[r * k + c] / s);
      }
    }
  }
}

void dequantize_fp8_block_weight(const uint8_t* q, const float* scales, int64_t n, int64_t k,
                                 float* w) {
  check_shape("dequantize_fp8_block_weight", n, k);
  const int64_t num_col_blocks = ceil_div(k, kFp8Block);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const float s = scales[(r / kFp8Block) * num_col_blocks + c / kFp8Block];
      w[r * k + c] = fmt::e4m3_to_float(q[r * k + c]) * s;
    }
  }
}

// ---- FP8 1x128 activation groups --------------------------------------------------------

void quantize_fp8_act_1x128(const float* x, int64_t t, int64_t k, bool pow2_scale, uint8_t* q,
                            float* scales) {
  check_shape("quantize_fp8_act_1x128", t, k);
  const int64_t num_groups = ceil_div(k, kFp8Block);
  for (int64_t row = 0; row < t; ++row) {
    for (int64_t g = 0; g < num_groups; ++g) {
      const int64_t c0 = g * kFp8Block, c1 = std::min(k, c0 + kFp8Block);
      const float amax = block_amax("quantize_fp8_act_1x128", x, k, row, row + 1, c0, c1);
      float s = std::max(amax, kFp8ActScaleFloor) / fmt::kE4M3Max;
      if (pow2_scale) s = pow2_ceil(s);
      scales[row * num_groups + g] = s;  // [t, ceil(k/128)]
      for (int64_t c = c0; c < c1; ++c) q[row * k + c] = fmt::float_to_e4m3(x[row * k + c] / s);
    }
  }
}

void dequantize_fp8_act_1x128(const uint8_t* q, const float* scales, int64_t t, int64_t k,
                              float* x) {
  check_shape("dequantize_fp8_act_1x128", t, k);
  const int64_t num_groups = ceil_div(k, kFp8Block);
  for (int64_t row = 0; row < t; ++row) {
    for (int64_t c = 0; c < k; ++c) {
      x[row * k + c] =
          fmt::e4m3_to_float(q[row * k + c]) * scales[row * num_groups + c / kFp8Block];
    }
  }
}

// ---- NVFP4 --------------------------------------------------------------------------------

float nvfp4_global_scale(const float* x, int64_t n) {
  const float amax = vector_amax("nvfp4_global_scale", x, n);
  if (amax == 0.0f) return 1.0f;
  return fmt::kE4M3Max * fmt::kE2M1Max / amax;
}

void quantize_nvfp4(const float* x, int64_t n, int64_t k, float global_scale, uint8_t* q,
                    uint8_t* sf) {
  check_shape("quantize_nvfp4", n, k);
  MOE_CHECK(k % kNvfp4Block == 0, "quantize_nvfp4: k = ", k, " is not a multiple of ", kNvfp4Block);
  MOE_CHECK(std::isfinite(global_scale) && global_scale > 0.0f, "quantize_nvfp4: global scale ",
            global_scale, " must be positive and finite");
  const float g = global_scale;
  const int64_t num_blocks = k / kNvfp4Block;
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t b = 0; b < num_blocks; ++b) {
      const int64_t c0 = b * kNvfp4Block;
      const float amax = block_amax("quantize_nvfp4", x, k, row, row + 1, c0, c0 + kNvfp4Block);
      const uint8_t sf_code = fmt::float_to_e4m3((g * amax) / fmt::kE2M1Max);
      const float sf_value = fmt::e4m3_to_float(sf_code);
      sf[row * num_blocks + b] = sf_code;  // [n, k/16]
      for (int64_t c = c0; c < c0 + kNvfp4Block; c += 2) {
        uint8_t codes[2] = {0, 0};
        if (sf_value != 0.0f) {
          for (int j = 0; j < 2; ++j)
            codes[j] = fmt::float_to_e2m1((x[row * k + c + j] * g) / sf_value);
        }
        q[(row * k + c) / 2] = fmt::e2m1_pack(codes[0], codes[1]);  // [n, k/2]
      }
    }
  }
}

void dequantize_nvfp4(const uint8_t* q, const uint8_t* sf, int64_t n, int64_t k, float global_scale,
                      float* x) {
  check_shape("dequantize_nvfp4", n, k);
  MOE_CHECK(k % kNvfp4Block == 0, "dequantize_nvfp4: k = ", k, " is not a multiple of ",
            kNvfp4Block);
  MOE_CHECK(std::isfinite(global_scale) && global_scale > 0.0f, "dequantize_nvfp4: global scale ",
            global_scale, " must be positive and finite");
  const int64_t num_blocks = k / kNvfp4Block;
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t c = 0; c < k; ++c) {
      const uint8_t byte = q[(row * k + c) / 2];
      const uint8_t code = (c % 2 == 0) ? fmt::e2m1_low(byte) : fmt::e2m1_high(byte);
      const float sf_value = fmt::e4m3_to_float(sf[row * num_blocks + c / kNvfp4Block]);
      // e2m1 * e4m3 is exact in float; the division by G is the one rounding.
      x[row * k + c] = (fmt::e2m1_to_float(code) * sf_value) / global_scale;
    }
  }
}

// ---- MX formats ---------------------------------------------------------------------------

uint8_t mx_scale_code(MxElem elem, MxScaleRule rule, float amax) {
  MOE_CHECK(std::isfinite(amax) && amax >= 0.0f, "mx_scale_code: amax ", amax,
            " must be finite and non-negative");
  if (amax == 0.0f) return 0;  // 2^-127: the block dequantizes to zeros
  const bool is_e2m1 = elem == MxElem::kE2M1;
  int p = 0;
  if (rule == MxScaleRule::kFloor) {
    // OCP MX v1.0: X = 2^(floor(log2(amax)) - emax_elem); elements above max_elem * X
    // (amax in (6 * 2^k, 8 * 2^k) for e2m1) saturate.
    const int emax = is_e2m1 ? 2 : 8;
    int exp = 0;
    std::frexp(amax, &exp);  // amax = frac * 2^exp, frac in [0.5, 1): floor(log2) = exp - 1
    p = (exp - 1) - emax;
  } else {
    // NVIDIA (cuBLAS, TensorRT-LLM): X = 2^ceil(log2(amax / max_elem)); no element saturates.
    // The quotient is formed in double: amax has 24 significant bits and max_elem (6, 448)
    // at most 3, so it is a power of two in double exactly when it is one in real numbers.
    // (A float quotient gives the same p: the nearest float above a threshold amax
    // divided by max_elem never rounds down onto the power of two.)
    const double ratio = static_cast<double>(amax) / (is_e2m1 ? fmt::kE2M1Max : fmt::kE4M3Max);
    int exp = 0;
    const double frac = std::frexp(ratio, &exp);
    p = frac == 0.5 ? exp - 1 : exp;
  }
  p = std::clamp(p, -127, 127);
  return static_cast<uint8_t>(p + 127);
}

// Scale rule: the caller's `rule`, kFloor (OCP MX v1.0) or kRceil (NVIDIA); the quant method
// that calls this names which one its format uses. Dequantization does not depend on it.
void quantize_mx(MxElem elem, MxScaleRule rule, const float* x, int64_t n, int64_t k, uint8_t* q,
                 uint8_t* scales) {
  check_shape("quantize_mx", n, k);
  MOE_CHECK(k % kMxBlock == 0, "quantize_mx: k = ", k, " is not a multiple of ", kMxBlock);
  const int64_t num_blocks = k / kMxBlock;
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t b = 0; b < num_blocks; ++b) {
      const int64_t c0 = b * kMxBlock;
      const float amax = block_amax("quantize_mx", x, k, row, row + 1, c0, c0 + kMxBlock);
      const uint8_t code = mx_scale_code(elem, rule, amax);
      const float scale = fmt::ue8m0_to_float(code);
      scales[row * num_blocks + b] = code;  // [n, k/32]
      const float* xb = x + row * k + c0;
      if (elem == MxElem::kE4M3) {
        for (int64_t j = 0; j < kMxBlock; ++j)
          q[row * k + c0 + j] = fmt::float_to_e4m3(xb[j] / scale);
      } else {
        for (int64_t j = 0; j < kMxBlock; j += 2) {
          q[(row * k + c0 + j) / 2] = fmt::e2m1_pack(fmt::float_to_e2m1(xb[j] / scale),
                                                     fmt::float_to_e2m1(xb[j + 1] / scale));
        }
      }
    }
  }
}

void dequantize_mx(MxElem elem, const uint8_t* q, const uint8_t* scales, int64_t n, int64_t k,
                   float* x) {
  check_shape("dequantize_mx", n, k);
  MOE_CHECK(k % kMxBlock == 0, "dequantize_mx: k = ", k, " is not a multiple of ", kMxBlock);
  const int64_t num_blocks = k / kMxBlock;
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t c = 0; c < k; ++c) {
      const float scale = fmt::ue8m0_to_float(scales[row * num_blocks + c / kMxBlock]);
      float v;
      if (elem == MxElem::kE4M3) {
        v = fmt::e4m3_to_float(q[row * k + c]);
      } else {
        const uint8_t byte = q[(row * k + c) / 2];
        v = fmt::e2m1_to_float(c % 2 == 0 ? fmt::e2m1_low(byte) : fmt::e2m1_high(byte));
      }
      x[row * k + c] = v * scale;
    }
  }
}

// ---- 128x4 swizzled scale layout ----------------------------------------------------------

int64_t swizzle_128x4_rows(int64_t rows) { return ceil_div(rows, 128) * 128; }
int64_t swizzle_128x4_cols(int64_t cols) { return ceil_div(cols, 4) * 4; }

int64_t swizzle_128x4_offset(int64_t m, int64_t k, int64_t cols) {
  MOE_CHECK(m >= 0 && k >= 0 && k < swizzle_128x4_cols(cols), "swizzle_128x4_offset: (", m, ", ", k,
            ") is outside a scale matrix of ", cols, " columns");
  const int64_t num_k_tiles = swizzle_128x4_cols(cols) / 4;
  const int64_t tile = (m / 128) * num_k_tiles + k / 4;  // tiles ordered by (m_tile, k_tile)
  return tile * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 + (k % 4);
}

void swizzle_128x4(const uint8_t* scales, int64_t rows, int64_t cols, uint8_t* out) {
  check_shape("swizzle_128x4", rows, cols);
  std::fill(out, out + swizzle_128x4_rows(rows) * swizzle_128x4_cols(cols), uint8_t{0});
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t k = 0; k < cols; ++k) out[swizzle_128x4_offset(m, k, cols)] = scales[m * cols + k];
  }
}

void unswizzle_128x4(const uint8_t* swizzled, int64_t rows, int64_t cols, uint8_t* scales) {
  check_shape("unswizzle_128x4", rows, cols);
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t k = 0; k < cols; ++k)
      scales[m * cols + k] = swizzled[swizzle_128x4_offset(m, k, cols)];
  }
}

}  // namespace moe::quant
