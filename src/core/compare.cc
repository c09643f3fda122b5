#include "core/compare.h"

#include <cmath>
#include <limits>

#include "moe/errors.h"
#include "quant/formats.h"

namespace moe {

std::vector<double> to_doubles(const TensorView& t) {
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(),
            "to_doubles needs a contiguous host tensor, got ", t.str());
  const int64_t n = t.numel();
  std::vector<double> v(static_cast<size_t>(n));
  switch (t.dtype()) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) v[i] = t.data_as<float>()[i];
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) v[i] = fmt::bf16_to_float(t.data_as<uint16_t>()[i]);
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) v[i] = fmt::f16_to_float(t.data_as<uint16_t>()[i]);
      break;
    default:
      MOE_THROW("to_doubles: unsupported dtype ", dtype_name(t.dtype()));
  }
  return v;
}

double relative_l2(const std::vector<double>& a, const std::vector<double>& ref) {
  MOE_CHECK(a.size() == ref.size(), "relative_l2: ", a.size(), " vs ", ref.size(), " elements");
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  if (den == 0) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

double relative_l2(const TensorView& a, const TensorView& ref) {
  MOE_CHECK(a.numel() == ref.numel(), "relative_l2: ", a.str(), " vs ", ref.str());
  return relative_l2(to_doubles(a), to_doubles(ref));
}

}  // namespace moe
