// Element types of MoE Engine tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace moe {

/// Element types. Sub-byte and scale formats are first-class so that a tensor's bytes can
/// never be read with the wrong meaning; codecs live in src/quant/formats.h.
enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kE4M3,       ///< fp8 e4m3 ("fn": no Inf, max 448)
  kE2M1,       ///< fp4 e2m1, two per byte: low nibble = even element, high nibble = odd
  kUE8M0,      ///< unsigned power-of-two scale, value 2^(e-127), 0xFF = NaN
  kE4M3Scale,  ///< e4m3 used as a non-negative block scale (NVFP4); same bits as kE4M3
  kI32,
  kI64,
  kU8,   ///< raw bytes (e.g. checkpoint tensors stored as uint8)
  kF64,  ///< float64: host-side partial sums that must not be rounded (expert parallelism)
};

/// Bits per element (4 for kE2M1).
int dtype_bits(DType dtype);
/// Bytes taken by `numel` elements (packed types round up to whole bytes).
size_t dtype_bytes(DType dtype, int64_t numel);
/// Lower-case name: "f32", "bf16", "e4m3", "e2m1", "ue8m0", ...
std::string_view dtype_name(DType dtype);
/// Inverse of dtype_name; throws moe::Error naming the unknown string.
DType parse_dtype(std::string_view name);
/// True for the 16/32-bit float types that carry activations.
bool is_float_activation(DType dtype);

}  // namespace moe
