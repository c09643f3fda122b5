// Host-side packing of the grouped backend's weights into the layout its kernels read: pure,
// header-only functions (no CUDA), unit-tested on the CPU (tests/grouped).
//
//   - Row placement of FC1 (any element size, counted in bytes): gate and up rows of a group
//     interleaved by 8 (grouped_layout.h), and the column slice of FC2 a group owns.
//   - fp8_block scales (DeepSeek 128x128 checkpoint blocks, weight_scale_inv) repacked per
//     group, with KB1 = ceil(H/128), KB2 = ceil(I/128), MT1 = ceil(2I/128), MT2 = ceil(H/128):
//       S13 f32 [MT1, 2, KB1]  S13[t][u][kb] = scale of gate (u = 0) / up (u = 1) rows
//                              64t..64t+63 of the group, K block kb. A W13 tile of 128 stored
//                              rows holds gate and up rows 64t..64t+63 (interleave by 8).
//       S2  f32 [MT2, KB2]     S2[mb][kb] = scale of down rows 128mb.., K columns 128kb.. of
//                              the group.
//     A group is part p of its projection: rows (FC1) or columns (FC2) p*I .. p*I + I - 1 of
//     a source with src_inter = I (routed expert) or shared_intermediate_size (shared MLP).
//   - Which shapes the fp8 methods support (fp8_unsupported_reason).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backends/grouped/grouped_layout.h"
#include "moe/config.h"
#include "moe/errors.h"

namespace moe::grouped {

inline constexpr int64_t kFp8BlockSize = 128;  // checkpoint weight block: 128 x 128
inline constexpr int64_t kFc1TileRows = 128;   // stored W13 rows per FC1 weight tile
inline constexpr int64_t kFc1TileProjRows = kFc1TileRows / 2;  // gate (and up) rows per tile

/// ceil(n / 128): blocks of the checkpoint's 128 x 128 grid covering n rows or columns.
constexpr int64_t fp8_blocks(int64_t n) { return (n + kFp8BlockSize - 1) / kFp8BlockSize; }

/// Per-group dims of the fp8 scale layouts.
struct Fp8GroupDims {
  int64_t inter = 0;   // I
  int64_t hidden = 0;  // H

  int64_t kb1() const { return fp8_blocks(hidden); }
  int64_t kb2() const { return fp8_blocks(inter); }
  int64_t mt1() const { return (2 * inter + kFc1TileRows - 1) / kFc1TileRows; }
  int64_t mt2() const { return fp8_blocks(hidden); }
  int64_t s13_size() const { return mt1() * 2 * kb1(); }  // [MT1, 2, KB1]
  int64_t s2_size() const { return mt2() * kb2(); }       // [MT2, KB2]
};

/// Why the grouped fp8 methods cannot run `quant` on experts of `inter` x `hidden` with
/// `num_shared_groups` shared-expert groups; "" when they can.
inline std::string fp8_unsupported_reason(QuantMode quant, int64_t inter, int64_t hidden,
                                          int num_shared_groups) {
  if (quant != QuantMode::kFP8PerTensor && quant != QuantMode::kFP8Block) {
    return "quant mode " + std::string(quant_mode_name(quant)) + " is not an fp8 mode";
  }
  if (inter % 16 != 0 || hidden % 16 != 0) {
    return "fp8 weights need hidden_size and intermediate_size multiples of 16 (16-byte TMA "
           "rows), got hidden " +
           std::to_string(hidden) + ", intermediate " + std::to_string(inter);
  }
  if (quant == QuantMode::kFP8Block && num_shared_groups > 1 && inter % kFp8BlockSize != 0) {
    return "fp8_block with " + std::to_string(num_shared_groups) +
           " shared-expert groups needs intermediate_size % 128 == 0 (got " +
           std::to_string(inter) +
           "): a group's 128-wide K blocks would straddle the checkpoint's scale blocks";
  }
  return "";
}

/// Index of the first NaN code (S.1111.111) among n e4m3 bytes, or -1 when all are finite.
inline int64_t find_e4m3_nan(const uint8_t* q, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if ((q[i] & 0x7F) == 0x7F) return i;
  }
  return -1;
}

/// Places rows [first_row, first_row + inter) of a gate (up = false) or up projection
/// `proj` [*, row_bytes] into the stored rows fc1_stored_row(up, i) of one group's
/// w13 [2 * inter, row_bytes].
inline void place_fc1_rows(const uint8_t* proj, bool up, int64_t first_row, int64_t inter,
                           int64_t row_bytes, uint8_t* w13) {
  for (int64_t i = 0; i < inter; ++i) {
    std::memcpy(w13 + fc1_stored_row(up, i) * row_bytes, proj + (first_row + i) * row_bytes,
                row_bytes);
  }
}

/// Copies columns [first_col, first_col + cols) (in bytes) of every row of a down projection
/// `down` [rows, src_row_bytes] into one group's w2 [rows, cols].
inline void copy_fc2_columns(const uint8_t* down, int64_t rows, int64_t src_row_bytes,
                             int64_t first_col, int64_t cols, uint8_t* w2) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(w2 + r * cols, down + r * src_row_bytes + first_col, cols);
  }
}

/// Fills the u = `up` half of one group's S13 [MT1, 2, KB1] from the block scales of its
/// gate or up projection, `proj_scales` f32 [ceil(src_inter/128), KB1]; the group is part
/// `shared_part` (rows shared_part * I ..) of that projection.
/// NOTE: every tile t < MT1 = ceil(I/64) starts inside the projection (64t < I); the clamp to
/// the last block row only guards against a caller's inconsistent sizes and keeps entries
/// finite.
inline void pack_fc1_block_scales_into(const float* proj_scales, bool up, int64_t src_inter,
                                       const Fp8GroupDims& d, int64_t shared_part, float* s13) {
  const int64_t first_row = shared_part * d.inter;
  MOE_CHECK(first_row + d.inter <= src_inter, "fp8_block FC1 scales: group part ", shared_part,
            " of ", d.inter, " rows exceeds the projection's ", src_inter, " rows");
  MOE_CHECK(first_row % kFc1TileProjRows == 0, "fp8_block FC1 scales: group part ", shared_part,
            " starts at row ", first_row, ", not a multiple of ", kFc1TileProjRows);
  const int64_t kb1 = d.kb1(), last_block = fp8_blocks(src_inter) - 1;
  for (int64_t t = 0; t < d.mt1(); ++t) {
    const int64_t block = std::min((first_row + kFc1TileProjRows * t) / kFp8BlockSize, last_block);
    std::copy_n(proj_scales + block * kb1, kb1, s13 + (t * 2 + (up ? 1 : 0)) * kb1);
  }
}

/// One group's S13 f32 [MT1, 2, KB1] from the gate and up block scales, each
/// f32 [ceil(src_inter/128), KB1].
inline std::vector<float> pack_fc1_block_scales(const float* gate_scales, const float* up_scales,
                                                int64_t src_inter, const Fp8GroupDims& d,
                                                int64_t shared_part) {
  std::vector<float> s13(d.s13_size());
  pack_fc1_block_scales_into(gate_scales, false, src_inter, d, shared_part, s13.data());
  pack_fc1_block_scales_into(up_scales, true, src_inter, d, shared_part, s13.data());
  return s13;
}

/// One group's S2 f32 [MT2, KB2] from the down projection's block scales
/// f32 [MT2, ceil(src_inter/128)]; the group is part `shared_part` (columns
/// shared_part * I ..) of that projection, which must start on a 128-column block.
inline std::vector<float> pack_fc2_block_scales(const float* down_scales, int64_t src_inter,
                                                const Fp8GroupDims& d, int64_t shared_part) {
  const int64_t first_col = shared_part * d.inter;
  MOE_CHECK(first_col + d.inter <= src_inter, "fp8_block FC2 scales: group part ", shared_part,
            " of ", d.inter, " columns exceeds the projection's ", src_inter, " columns");
  MOE_CHECK(first_col % kFp8BlockSize == 0, "fp8_block FC2 scales: group part ", shared_part,
            " starts at column ", first_col, ", inside a 128-column scale block");
  const int64_t src_kb = fp8_blocks(src_inter), kb0 = first_col / kFp8BlockSize;
  std::vector<float> s2(d.s2_size());
  for (int64_t mb = 0; mb < d.mt2(); ++mb) {
    std::copy_n(down_scales + mb * src_kb + kb0, d.kb2(), &s2[mb * d.kb2()]);
  }
  return s2;
}

}  // namespace moe::grouped
