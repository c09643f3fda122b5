// Comparing outputs: the relative L2 error every backend is judged by against the oracle.
#pragma once

#include <vector>

#include "moe/tensor.h"

namespace moe {

/// Host f32/bf16/f16 tensor (contiguous) -> its values as doubles.
std::vector<double> to_doubles(const TensorView& t);
/// ||a - ref||_2 / ||ref||_2 over all elements; +inf when any element of `a` is not finite,
/// 0 when both are all-zero. Shapes must match.
double relative_l2(const TensorView& a, const TensorView& ref);
double relative_l2(const std::vector<double>& a, const std::vector<double>& ref);

}  // namespace moe
