#include "moe/dtype.h"

#include <array>
#include <string>

#include "moe/errors.h"

namespace moe {
namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  int bits;
};

// The list of element types, written once.
constexpr std::array<DTypeInfo, 11> kDTypes = {{
    {DType::kF32, "f32", 32},
    {DType::kF16, "f16", 16},
    {DType::kBF16, "bf16", 16},
    {DType::kE4M3, "e4m3", 8},
    {DType::kE2M1, "e2m1", 4},
    {DType::kUE8M0, "ue8m0", 8},
    {DType::kE4M3Scale, "e4m3scale", 8},
    {DType::kI32, "i32", 32},
    {DType::kI64, "i64", 64},
    {DType::kU8, "u8", 8},
    {DType::kF64, "f64", 64},
}};

const DTypeInfo& info(DType dtype) {
  for (const auto& i : kDTypes) {
    if (i.dtype == dtype) return i;
  }
  MOE_UNREACHABLE("dtype code ", static_cast<int>(dtype));
}

}  // namespace

int dtype_bits(DType dtype) { return info(dtype).bits; }

size_t dtype_bytes(DType dtype, int64_t numel) {
  MOE_CHECK(numel >= 0, "negative element count ", numel);
  return static_cast<size_t>((numel * dtype_bits(dtype) + 7) / 8);
}

std::string_view dtype_name(DType dtype) { return info(dtype).name; }

DType parse_dtype(std::string_view name) {
  std::string known;
  for (const auto& i : kDTypes) {
    if (i.name == name) return i.dtype;
    known += (known.empty() ? "" : ", ") + std::string(i.name);
  }
  MOE_THROW("unknown dtype '", name, "' (known: ", known, ")");
}

bool is_float_activation(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

}  // namespace moe
