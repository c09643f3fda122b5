// TMA tensor maps (CUtensorMap) for the grouped GEMM, encoded through the driver entry point
// so that the library does not link libcuda (machines without a driver still load it).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "moe/dtype.h"

namespace moe::grouped {

/// 3D map over W [experts, n, k] (k contiguous), box {64, 128, 1}, 128-byte swizzle.
CUtensorMap make_weight_map(const void* w, DType dtype, int64_t experts, int64_t n, int64_t k);
/// 2D map over X [rows, k] (k contiguous), box {64, box_rows}, 128-byte swizzle.
CUtensorMap make_rows_map(const void* x, DType dtype, int64_t rows, int64_t k, int box_rows);

}  // namespace moe::grouped
