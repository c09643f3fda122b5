// TMA tensor maps (CUtensorMap) for the grouped GEMM, encoded through the driver entry point
// so that the library does not link libcuda (machines without a driver still load it).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "moe/dtype.h"

namespace moe::grouped {

/// 3D map over W [experts, n, k] (k contiguous), box {128 bytes, 128, 1}, 128-byte swizzle.
CUtensorMap make_weight_map(const void* w, DType dtype, int64_t experts, int64_t n, int64_t k);
/// 2D map over X [rows, k] (k contiguous), box {128 bytes, box_rows}, 128-byte swizzle.
CUtensorMap make_rows_map(const void* x, DType dtype, int64_t rows, int64_t k, int box_rows);

/// 2D map over 1x128 activation scales f32 [groups, ld] (group-major, ld a multiple of 4 and
/// at least the rows of X), box {box_rows, 1}, not swizzled: one K block's scales of a token
/// tile. NOTE: TMA needs the box's start in the inner dimension 16-byte aligned: the grouped
/// GEMM loads block_n + 4 scales from the tile's first row rounded down to a multiple of 4
/// (box_rows = block_n + 4, scale_box_rows).
CUtensorMap make_scales_map(const float* scales, int64_t groups, int64_t ld, int box_rows);

/// The scale box of a token tile of block_n rows.
constexpr int scale_box_rows(int block_n) { return block_n + 4; }

}  // namespace moe::grouped
