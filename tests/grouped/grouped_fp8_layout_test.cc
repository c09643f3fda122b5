// The grouped backend's fp8 weight packing (grouped_fp8_layout.h), checked on the CPU: row
// placement of 1-byte W13 / W2, fp8_block scale packing (hand-computed small cases, then the
// per-row invariant on random shapes), the NaN scan and the supported shapes.
#include "backends/grouped/grouped_fp8_layout.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "moe/errors.h"

namespace moe::grouped {
namespace {

std::vector<uint8_t> random_bytes(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng() & 0xFF);
  return v;
}

// Distinct positive scales: block (i, j) of a grid with `cols` block columns -> 1 + i*cols + j,
// offset by `base` so that different projections differ.
std::vector<float> scale_grid(int64_t rows, int64_t cols, float base) {
  std::vector<float> v(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) v[i] = base + 1.0f + static_cast<float>(i);
  return v;
}

// ---- Row placement ------------------------------------------------------------------------

TEST(GroupedFp8Layout, Fc1RowsInterleaveBy8Bytes) {
  // I = 16 (two interleave blocks), 5-byte rows, group part 1 of a 32-row projection.
  const int64_t inter = 16, row_bytes = 5, src_rows = 32, part = 1;
  const std::vector<uint8_t> gate = random_bytes(src_rows * row_bytes, 1);
  const std::vector<uint8_t> up = random_bytes(src_rows * row_bytes, 2);
  std::vector<uint8_t> w13(2 * inter * row_bytes, 0xAA);  // poisoned
  place_fc1_rows(gate.data(), false, part * inter, inter, row_bytes, w13.data());
  place_fc1_rows(up.data(), true, part * inter, inter, row_bytes, w13.data());
  // Stored rows: 0-7 gate 16-23, 8-15 up 16-23, 16-23 gate 24-31, 24-31 up 24-31.
  for (int64_t r = 0; r < 2 * inter; ++r) {
    const int64_t block = r / 16, j = r % 16;
    const bool is_up = j >= 8;
    const int64_t src_row = part * inter + block * 8 + j % 8;
    const std::vector<uint8_t>& src = is_up ? up : gate;
    for (int64_t c = 0; c < row_bytes; ++c) {
      ASSERT_EQ(w13[r * row_bytes + c], src[src_row * row_bytes + c])
          << "row " << r << " col " << c;
    }
  }
}

TEST(GroupedFp8Layout, Fc1RowsMatchStoredRowMapping) {
  // e4m3 (1 byte per element): every stored row comes from fc1_source_row.
  const int64_t inter = 48, h = 32;
  const std::vector<uint8_t> gate = random_bytes(inter * h, 3);
  const std::vector<uint8_t> up = random_bytes(inter * h, 4);
  std::vector<uint8_t> w13(2 * inter * h, 0xAA);
  place_fc1_rows(gate.data(), false, 0, inter, h, w13.data());
  place_fc1_rows(up.data(), true, 0, inter, h, w13.data());
  for (int64_t r = 0; r < 2 * inter; ++r) {
    const SourceRow s = fc1_source_row(r);
    const std::vector<uint8_t>& src = s.up ? up : gate;
    for (int64_t c = 0; c < h; ++c) ASSERT_EQ(w13[r * h + c], src[s.row * h + c]) << r;
  }
}

TEST(GroupedFp8Layout, Fc2ColumnsOfAGroup) {
  // Down [H = 3, src_inter = 96] bytes; group part 2 of I = 32 takes columns 64..95.
  const int64_t h = 3, src_inter = 96, inter = 32, part = 2;
  const std::vector<uint8_t> down = random_bytes(h * src_inter, 5);
  std::vector<uint8_t> w2(h * inter, 0xAA);
  copy_fc2_columns(down.data(), h, src_inter, part * inter, inter, w2.data());
  for (int64_t r = 0; r < h; ++r) {
    for (int64_t c = 0; c < inter; ++c) {
      ASSERT_EQ(w2[r * inter + c], down[r * src_inter + 64 + c]) << r << ", " << c;
    }
  }
}

// ---- Block scales: hand-computed ------------------------------------------------------------

TEST(GroupedFp8Layout, DimsOfPartialBlocks) {
  const Fp8GroupDims d{200, 136};
  EXPECT_EQ(d.kb1(), 2);  // 136 = 128 + 8
  EXPECT_EQ(d.kb2(), 2);  // 200 = 128 + 72
  EXPECT_EQ(d.mt1(), 4);  // 400 stored rows = 3 full tiles + 16
  EXPECT_EQ(d.mt2(), 2);
  EXPECT_EQ(d.s13_size(), 4 * 2 * 2);
  EXPECT_EQ(d.s2_size(), 2 * 2);
}

TEST(GroupedFp8Layout, Fc1BlockScalesPartialBlocks) {
  // I = 200, H = 136: gate/up scales [2, 2]. Tiles t = 0..3 start at projection rows
  // 0, 64, 128, 192 -> checkpoint block rows 0, 0, 1, 1.
  const Fp8GroupDims d{200, 136};
  const std::vector<float> gate = {1, 2, 3, 4};    // [2, 2]
  const std::vector<float> up = {10, 20, 30, 40};  // [2, 2]
  const std::vector<float> s13 = pack_fc1_block_scales(gate.data(), up.data(), 200, d, 0);
  const std::vector<float> expected = {
      1, 2, 10, 20,  // t = 0: gate block row 0, up block row 0
      1, 2, 10, 20,  // t = 1
      3, 4, 30, 40,  // t = 2: block row 1
      3, 4, 30, 40,  // t = 3 (rows 192..199)
  };
  EXPECT_EQ(s13, expected);
}

TEST(GroupedFp8Layout, Fc2BlockScalesPartialBlocks) {
  const Fp8GroupDims d{200, 136};
  const std::vector<float> down = {5, 6, 7, 8};  // [ceil(136/128) = 2, ceil(200/128) = 2]
  EXPECT_EQ(pack_fc2_block_scales(down.data(), 200, d, 0), down);
}

TEST(GroupedFp8Layout, SharedPartBlockScales) {
  // Shared MLP of 3 groups of I = 128, H = 256: gate/up scales [3, 2], down [2, 3].
  const Fp8GroupDims d{128, 256};
  const std::vector<float> gate = scale_grid(3, 2, 0);    // 1..6
  const std::vector<float> up = scale_grid(3, 2, 100);    // 101..106
  const std::vector<float> down = scale_grid(2, 3, 200);  // 201..206
  // Part 1: rows 128..255 = block row 1 for both tiles (MT1 = 2).
  const std::vector<float> s13 = pack_fc1_block_scales(gate.data(), up.data(), 384, d, 1);
  EXPECT_EQ(s13, (std::vector<float>{3, 4, 103, 104, 3, 4, 103, 104}));
  // Part 2: block row 2.
  const std::vector<float> s13_2 = pack_fc1_block_scales(gate.data(), up.data(), 384, d, 2);
  EXPECT_EQ(s13_2, (std::vector<float>{5, 6, 105, 106, 5, 6, 105, 106}));
  // Down part 1: block column 1 of each block row; KB2 = 1.
  EXPECT_EQ(pack_fc2_block_scales(down.data(), 384, d, 1), (std::vector<float>{202, 205}));

  // I = 256, part 1 of 2: tiles start at rows 256, 320, 384, 448 -> block rows 2, 2, 3, 3.
  const Fp8GroupDims d2{256, 128};
  const std::vector<float> g2 = scale_grid(4, 1, 0);  // 1..4
  const std::vector<float> u2 = scale_grid(4, 1, 10);
  EXPECT_EQ(pack_fc1_block_scales(g2.data(), u2.data(), 512, d2, 1),
            (std::vector<float>{3, 13, 3, 13, 4, 14, 4, 14}));
  const std::vector<float> down2 = scale_grid(1, 4, 20);  // [1, 4]: 21..24
  EXPECT_EQ(pack_fc2_block_scales(down2.data(), 512, d2, 1), (std::vector<float>{23, 24}));
}

TEST(GroupedFp8Layout, MisalignedPartsThrow) {
  // A group of I = 200 that starts at column 200 straddles a 128-column block.
  const Fp8GroupDims d{200, 128};
  const std::vector<float> down = scale_grid(1, 4, 0);
  EXPECT_THROW(pack_fc2_block_scales(down.data(), 400, d, 1), Error);
  // Part past the projection.
  const Fp8GroupDims d2{128, 128};
  const std::vector<float> s = scale_grid(2, 1, 0);
  std::vector<float> s13(d2.s13_size());
  EXPECT_THROW(pack_fc1_block_scales_into(s.data(), false, 256, d2, 2, s13.data()), Error);
  EXPECT_THROW(pack_fc2_block_scales(s.data(), 256, d2, 2), Error);
}

// ---- Block scales: the per-row invariant on random shapes ------------------------------------

// Every stored W13 row r of a group must be scaled by the checkpoint block of its source row:
// S13[r / 128][up(r)][kb] == scales(up)[(first_row + row(r)) / 128][kb]; every W2 column c
// by S2[mb][c / 128] == down[mb][(first_col + c) / 128].
TEST(GroupedFp8Layout, BlockScalesFollowEveryRow) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t h = 16 * (1 + static_cast<int64_t>(rng() % 40));
    const int parts = 1 + static_cast<int>(rng() % 4);
    // Several parts need I % 128 == 0 (fp8_unsupported_reason); one part any multiple of 16.
    const int64_t inter = parts > 1 ? 128 * (1 + static_cast<int64_t>(rng() % 3))
                                    : 16 * (1 + static_cast<int64_t>(rng() % 40));
    const int64_t src_inter = parts * inter;
    const Fp8GroupDims d{inter, h};
    const std::vector<float> gate = scale_grid(fp8_blocks(src_inter), d.kb1(), 0);
    const std::vector<float> up = scale_grid(fp8_blocks(src_inter), d.kb1(), 1000);
    const std::vector<float> down = scale_grid(d.mt2(), fp8_blocks(src_inter), 2000);
    for (int part = 0; part < parts; ++part) {
      SCOPED_TRACE(testing::Message()
                   << "H " << h << " I " << inter << " part " << part << "/" << parts);
      const std::vector<float> s13 =
          pack_fc1_block_scales(gate.data(), up.data(), src_inter, d, part);
      for (int64_t r = 0; r < 2 * inter; ++r) {
        const SourceRow s = fc1_source_row(r);
        const int64_t block_row = (part * inter + s.row) / kFp8BlockSize;
        for (int64_t kb = 0; kb < d.kb1(); ++kb) {
          const float want = (s.up ? up : gate)[block_row * d.kb1() + kb];
          ASSERT_EQ(s13[((r / kFc1TileRows) * 2 + (s.up ? 1 : 0)) * d.kb1() + kb], want)
              << "stored row " << r << " kb " << kb;
        }
      }
      const std::vector<float> s2 = pack_fc2_block_scales(down.data(), src_inter, d, part);
      for (int64_t mb = 0; mb < d.mt2(); ++mb) {
        for (int64_t c = 0; c < inter; ++c) {
          const float want = down[mb * fp8_blocks(src_inter) + (part * inter + c) / kFp8BlockSize];
          ASSERT_EQ(s2[mb * d.kb2() + c / kFp8BlockSize], want) << "mb " << mb << " col " << c;
        }
      }
    }
  }
}

// ---- NaN scan and supported shapes --------------------------------------------------------

TEST(GroupedFp8Layout, FindsE4m3NaN) {
  std::vector<uint8_t> q = {0x00, 0x7E, 0xFE, 0x80, 0x01, 0x77};  // finite codes
  EXPECT_EQ(find_e4m3_nan(q.data(), static_cast<int64_t>(q.size())), -1);
  q[4] = 0xFF;
  EXPECT_EQ(find_e4m3_nan(q.data(), static_cast<int64_t>(q.size())), 4);
  q[2] = 0x7F;
  EXPECT_EQ(find_e4m3_nan(q.data(), static_cast<int64_t>(q.size())), 2);
  EXPECT_EQ(find_e4m3_nan(q.data(), 2), -1);
}

TEST(GroupedFp8Layout, UnsupportedReasons) {
  using Q = QuantMode;
  // DeepSeek-V3 (I = 2048, H = 7168, 1 shared group) and Qwen2-57B-A14B-like shapes.
  EXPECT_EQ(fp8_unsupported_reason(Q::kFP8Block, 2048, 7168, 1), "");
  EXPECT_EQ(fp8_unsupported_reason(Q::kFP8Block, 2560, 3584, 8), "");
  EXPECT_EQ(fp8_unsupported_reason(Q::kFP8PerTensor, 2560, 3584, 8), "");
  // I not a multiple of 128: fine with at most one shared group, not with several.
  EXPECT_EQ(fp8_unsupported_reason(Q::kFP8Block, 208, 144, 0), "");
  EXPECT_EQ(fp8_unsupported_reason(Q::kFP8Block, 208, 144, 1), "");
  const std::string several = fp8_unsupported_reason(Q::kFP8Block, 208, 144, 2);
  EXPECT_NE(several.find("128"), std::string::npos) << several;
  EXPECT_NE(several.find("208"), std::string::npos) << several;
  EXPECT_EQ(fp8_unsupported_reason(Q::kFP8PerTensor, 208, 144, 2), "");
  // 16-byte TMA rows.
  for (const Q q : {Q::kFP8Block, Q::kFP8PerTensor}) {
    const std::string bad_i = fp8_unsupported_reason(q, 200, 144, 0);
    EXPECT_NE(bad_i.find("16"), std::string::npos) << bad_i;
    EXPECT_NE(fp8_unsupported_reason(q, 208, 136, 0), "");
  }
  // Not an fp8 mode.
  EXPECT_NE(fp8_unsupported_reason(Q::kBF16, 2048, 7168, 0).find("bf16"), std::string::npos);
}

}  // namespace
}  // namespace moe::grouped
