// Quantizers and dequantizers of every block format (../shared/facts/formats.md), on the
// CPU. These define the numbers: GPU quantization kernels are checked against them bit for
// bit. Inputs are float (the value a kernel holds in registers); outputs are codes + scales.
//
// Layouts: matrices are row-major [rows, cols]; blocks run along cols (the K dimension).
#pragma once

#include <cstdint>

namespace moe::quant {

// ---- FP8 per-tensor -------------------------------------------------------------------
/// scale = max(amax(x), 1e-12) / 448 (the dequantization factor).
float fp8_per_tensor_scale(const float* x, int64_t n);
/// q[i] = e4m3(x[i] / scale).
void quantize_fp8_per_tensor(const float* x, int64_t n, float scale, uint8_t* q);

// ---- FP8 128x128 weight blocks (DeepSeek-V3 weight_scale_inv) ---------------------------
/// w [n, k] -> q [n, k], scales f32 [ceil(n/128), ceil(k/128)]: per block
/// s = max(amax, 1e-12) / 448; q = e4m3(w / s). Partial edge blocks allowed.
void quantize_fp8_block_weight(const float* w, int64_t n, int64_t k, uint8_t* q, float* scales);
void dequantize_fp8_block_weight(const uint8_t* q, const float* scales, int64_t n, int64_t k,
                                 float* w);

// ---- FP8 1x128 activation groups --------------------------------------------------------
/// x [t, k] -> q [t, k], scales f32 [t, ceil(k/128)]: per (token, 128 channels)
/// s = max(amax, 1e-4) / 448, rounded up to a power of two when pow2_scale; q = e4m3(x / s).
void quantize_fp8_act_1x128(const float* x, int64_t t, int64_t k, bool pow2_scale, uint8_t* q,
                            float* scales);
void dequantize_fp8_act_1x128(const uint8_t* q, const float* scales, int64_t t, int64_t k,
                              float* x);

// ---- NVFP4: 16-element blocks, e4m3 block scale, fp32 global scale ----------------------
/// Global encode scale G = 448 * 6 / amax(x) (1 when amax == 0).
float nvfp4_global_scale(const float* x, int64_t n);
/// x [n, k], k % 16 == 0 -> q packed e2m1 [n, k/2], sf e4m3 [n, k/16]:
/// SF = e4m3(G * amax(block) / 6); q = e2m1(x * G / SF) (0 where SF == 0).
void quantize_nvfp4(const float* x, int64_t n, int64_t k, float global_scale, uint8_t* q,
                    uint8_t* sf);
/// x = e2m1(q) * e4m3(sf) / G.
void dequantize_nvfp4(const uint8_t* q, const uint8_t* sf, int64_t n, int64_t k, float global_scale,
                      float* x);

// ---- MX formats: 32-element blocks, UE8M0 scale -------------------------------------------
enum class MxElem { kE2M1, kE4M3 };
/// The rule that picks a block's power-of-two scale X from its amax:
///  kFloor (OCP MX v1.0): X = 2^(floor(log2(amax)) - emax), emax = 2 (e2m1), 8 (e4m3)
///  kRceil (NVIDIA, cuBLAS/TensorRT-LLM): X = 2^ceil(log2(amax / max_elem))
/// A block of zeros gets X = 2^-127 (code 0). Exponents clamp to [-127, 127].
enum class MxScaleRule { kFloor, kRceil };
/// x [n, k], k % 32 == 0 -> q [n, k] (e4m3 bytes) or [n, k/2] (packed e2m1), scales ue8m0
/// [n, k/32]; q = elem(x / X).
void quantize_mx(MxElem elem, MxScaleRule rule, const float* x, int64_t n, int64_t k, uint8_t* q,
                 uint8_t* scales);
void dequantize_mx(MxElem elem, const uint8_t* q, const uint8_t* scales, int64_t n, int64_t k,
                   float* x);
/// The scale code of one block with maximum magnitude `amax`.
uint8_t mx_scale_code(MxElem elem, MxScaleRule rule, float amax);

// ---- 128x4 swizzled scale layout (block-scaled tensor-core kernels) -------------------------
/// Padded sizes: rows to a multiple of 128, cols to a multiple of 4.
int64_t swizzle_128x4_rows(int64_t rows);
int64_t swizzle_128x4_cols(int64_t cols);
/// Byte offset of scale (m, k) inside the swizzled buffer of `cols` (unpadded) columns:
/// tiles of 128x4 ordered by (m_tile, k_tile); inside a tile
/// (m % 32) * 16 + ((m % 128) / 32) * 4 + (k % 4).
int64_t swizzle_128x4_offset(int64_t m, int64_t k, int64_t cols);
/// scales [rows, cols] bytes -> out [swizzle_128x4_rows(rows) * swizzle_128x4_cols(cols)],
/// padding filled with 0.
void swizzle_128x4(const uint8_t* scales, int64_t rows, int64_t cols, uint8_t* out);
void unswizzle_128x4(const uint8_t* swizzled, int64_t rows, int64_t cols, uint8_t* scales);

}  // namespace moe::quant
