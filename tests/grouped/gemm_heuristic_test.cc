// The grouped GEMM's variant choice: a pure function of the problem, checked on the CPU.
#include "backends/grouped/gemm_heuristic.h"
#include "backends/grouped/moe_kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace moe::grouped {
namespace {

const std::vector<int> kAll = {8, 16, 32, 64, 128, 256};

TEST(GemmHeuristic, StagesFillSharedMemory) {
  for (int b : kAll) {
    const int s = stages_for(b);
    EXPECT_GE(s, 2) << b;
    EXPECT_LE(s, kMaxStages);
    EXPECT_LE(s * stage_bytes(b) + 8 * 1024, kMaxSmemBytes) << b;
    EXPECT_TRUE(s == kMaxStages || (s + 1) * stage_bytes(b) + 8 * 1024 > kMaxSmemBytes) << b;
  }
  EXPECT_EQ(stages_for(256), 4);  // 48 KB stages: 4 fit in 227 KB
  EXPECT_EQ(stages_for(8), 8);
}

// The epilogue's staging (sm90_grouped_gemm.cuh step 4) fits beside the stages with the
// bookkeeping of 256 experts, and costs no stage of the compiled tiles.
TEST(GemmHeuristic, StagedEpilogueFitsBesideTheStages) {
  for (int b : {8, 16, 32, 64, 128, 192, 256}) {
    EXPECT_LE(smem_bytes_for({b, stages_for(b)}, 256), kMaxSmemBytes) << b;
    EXPECT_GE(epilogue_rows(b), std::min(b, 8)) << b;
    EXPECT_LE(epilogue_rows(b), std::min(b, 32)) << b;
  }
  EXPECT_EQ(stages_for(192), 5);
  EXPECT_EQ(stages_for(128), 6);
}

// The tokens-on-M tiles: one consumer warpgroup per 64 tokens; their warps' staging and the
// stages fit with the bookkeeping of 256 experts; 128 takes two weight tiles a stage (4 stages
// of 48 KB + scales), 192 one.
TEST(GemmHeuristic, TokensOnMTilesFit) {
  EXPECT_EQ(consumer_warpgroups(128, true), 2);
  EXPECT_EQ(consumer_warpgroups(192, true), 3);
  EXPECT_EQ(consumer_warpgroups(192, false), 2);
  EXPECT_EQ(threads_for(192, true), 512);
  EXPECT_EQ(threads_for(64, false), 384);
  EXPECT_EQ(weight_tiles_per_stage(192, true), 1);
  EXPECT_EQ(weight_tiles_per_stage(128, false), 1);
  EXPECT_EQ(stage_bytes(128, 2), stage_bytes(128) + kBlockM * kBlockK * 2);
#ifndef MOE_GROUPED_ONE_WEIGHT_TILE  // the A/B build option: one weight tile everywhere
  EXPECT_EQ(weight_tiles_per_stage(128, true), 2);
  EXPECT_EQ(stages_for_tokens_on_m(128), 4);
#endif
  EXPECT_EQ(stages_for_tokens_on_m(192), 4);
  EXPECT_EQ(stages_for(192, true), 4);
  EXPECT_EQ(stages_for(192, false), stages_for(192));
  for (int b : {128, 192}) {
    const GemmConfig c{b, stages_for_tokens_on_m(b), true};
    EXPECT_LE(smem_bytes_for(c, 256), kMaxSmemBytes) << b;
    // One more stage would not fit beside the staging and 8 KB of bookkeeping.
    EXPECT_GT((c.num_stages + 1) * stage_bytes(b, weight_tiles_per_stage(b, true)) +
                  tokens_on_m_staging_bytes(b) + 8 * 1024,
              kMaxSmemBytes)
        << b;
  }
  // FC2's unit output staged whole (GemmConfig::unit_out): three stages of two weight tiles
  // and the unit's 64 KB fit, with Kimi-K2's 384 experts' offsets; a fourth stage would not.
  const GemmConfig unit_out{128, kUnitOutStages, true, true};
  EXPECT_EQ(kUnitOutStagingBytes, 128 * 256 * 2);
  EXPECT_LE(smem_bytes_for(unit_out, 384), kMaxSmemBytes);
  EXPECT_EQ(smem_bytes_for(unit_out, 384) - smem_bytes_for({128, kUnitOutStages, true}, 384),
            kUnitOutStagingBytes - tokens_on_m_staging_bytes(128) + 16);
  EXPECT_GT((kUnitOutStages + 1) * stage_bytes(128, 2) + kUnitOutStagingBytes, kMaxSmemBytes);
  EXPECT_EQ(tokens_on_m_config(256, std::vector<int>{128, 192}), (GemmConfig{192, 4, true}));
  EXPECT_EQ(tokens_on_m_config(192, std::vector<int>{128}),
            (GemmConfig{128, stages_for_tokens_on_m(128), true}));
  EXPECT_EQ(tokens_on_m_config(128, std::vector<int>{128, 192}),
            (GemmConfig{128, stages_for_tokens_on_m(128), true}));
}

TEST(GemmHeuristic, ExpectedRowsPerActiveExpert) {
  EXPECT_DOUBLE_EQ(rows_per_active_expert(0, 128), 0.0);
  EXPECT_NEAR(rows_per_active_expert(1, 128), 1.0, 1e-9);
  // Many rows over few experts: every expert active, rows / E each.
  EXPECT_NEAR(rows_per_active_expert(8192, 8), 1024.0, 1e-6);
  // Qwen3-30B-A3B decode (8 rows, 128 experts): almost one row per active expert.
  EXPECT_LT(rows_per_active_expert(8, 128), 1.05);
}

TEST(GemmHeuristic, DecodeTakesTheNarrowTileAndPrefillTheWide) {
  // Qwen3-30B-A3B: E = 128, k = 8. The tile holds 1.5x the expected rows per active expert.
  EXPECT_EQ(choose_gemm_config(1 * 8, 128, kAll).block_n, 8);     // ~1 row
  EXPECT_EQ(choose_gemm_config(64 * 8, 128, kAll).block_n, 8);    // ~4.6 rows
  EXPECT_EQ(choose_gemm_config(384 * 8, 128, kAll).block_n, 64);  // ~24 rows
  EXPECT_EQ(choose_gemm_config(512 * 8, 128, kAll).block_n, 64);  // 32 rows (measured best)
  EXPECT_EQ(choose_gemm_config(4096 * 8, 128, kAll).block_n, 256);
  // Mixtral: E = 8, k = 2.
  EXPECT_EQ(choose_gemm_config(1 * 2, 8, kAll).block_n, 8);
  EXPECT_EQ(choose_gemm_config(48 * 2, 8, kAll).block_n, 32);    // 12 rows per expert
  EXPECT_EQ(choose_gemm_config(512 * 2, 8, kAll).block_n, 256);  // 128 rows (measured best)
  // Beyond the widest tile, the widest.
  EXPECT_EQ(choose_gemm_config(1 << 20, 8, kAll).block_n, 256);
  // Only what is compiled is chosen.
  const std::vector<int> trimmed = {8, 32, 128};
  EXPECT_EQ(choose_gemm_config(48 * 2, 8, trimmed).block_n, 32);
  EXPECT_EQ(choose_gemm_config(4096 * 8, 128, trimmed), (GemmConfig{128, stages_for(128)}));
}

TEST(GemmHeuristic, BlockScaledPrefillTakesTheTokensOnMTile) {
  const std::vector<int> block = {8, 16, 32, 64, 128, 192};  // kBlockScaledNs
  const GemmConfig on_m{128, stages_for_tokens_on_m(128), true};
  // Decode and small prefill: the 1.5x rule, as the other formats, tokens on N.
  EXPECT_EQ(choose_block_scaled_config(1 * 8, 128, block), (GemmConfig{8, stages_for(8)}));
  EXPECT_EQ(choose_block_scaled_config(512 * 8, 128, block), (GemmConfig{64, stages_for(64)}));
  // 128 and 256 rows per expert (DeepSeek-V3 E = 256 and Qwen3-30B-A3B E = 128 at 4096 tokens,
  // top-8): the tokens-on-M 128 tile, not the 192 the 1.5x rule gives.
  EXPECT_EQ(choose_gemm_config(4096 * 8, 256, block).block_n, 192);
  EXPECT_EQ(choose_block_scaled_config(4096 * 8, 256, block), on_m);
  EXPECT_EQ(choose_block_scaled_config(4096 * 8, 128, block), on_m);
  // 64 rows per expert: the 1.5x rule's 128 tile, tokens on M too.
  EXPECT_EQ(choose_block_scaled_config(2048 * 8, 256, block), on_m);
  // 512 and 1024 rows (DeepSeek-V3 / Qwen3-30B-A3B at 16384 tokens): still the 128 tile (two
  // weight tiles a stage; measured faster than 192 there).
  EXPECT_EQ(choose_block_scaled_config(16384 * 8, 256, block), on_m);
  EXPECT_EQ(choose_block_scaled_config(16384 * 8, 128, block), on_m);
  // From kBlockScaledWideRows (2048 rows: Qwen3-30B-A3B at 32768 tokens): the 192-token tile
  // on M (three consumer warpgroups).
  const GemmConfig on_m_192{192, stages_for_tokens_on_m(192), true};
  EXPECT_EQ(choose_block_scaled_config(32768 * 8, 128, block), on_m_192);
  EXPECT_EQ(choose_block_scaled_config(65536 * 8, 256, block), on_m_192);
  // Trimmed builds without the wide tile, or without the 128 one, still get a tile.
  EXPECT_EQ(choose_block_scaled_config(16384 * 8, 256, std::vector<int>{8, 128}), on_m);
  EXPECT_EQ(choose_block_scaled_config(8, 128, std::vector<int>{192}),
            (GemmConfig{192, stages_for(192)}));
}

TEST(GemmHeuristic, DecodeUnitsBound) {
  // One token, top-8 of 256 experts, one shared group, 32 weight tiles (DeepSeek-V3 FC1): the
  // exact 9 x 32.
  EXPECT_EQ(decode_units_bound(8, 256, 1, 1, 8, 32), 288);
  // Every way 20 rows can fall on <= 4 experts with 8-token tiles takes at most 4 + 16 / 8 = 6
  // token tiles (4 experts of 5 rows: 4; 17 + 1 + 1 + 1: 3 + 3 = 6).
  EXPECT_EQ(decode_units_bound(20, 4, 0, 20, 8, 1), 6);
  // Brute force over every split of R rows on E experts against the bound.
  for (int e_count : {1, 2, 3}) {
    for (int r = 0; r <= 12; ++r) {
      int64_t most = 0;
      for (int a = 0; a <= r; ++a) {
        for (int b = 0; a + b <= r; ++b) {
          const int c = r - a - b;
          if ((e_count < 3 && c > 0) || (e_count < 2 && b > 0)) continue;
          most = std::max<int64_t>(most, (a + 3) / 4 + (b + 3) / 4 + (c + 3) / 4);
        }
      }
      EXPECT_EQ(decode_units_bound(r, e_count, 0, r, 4, 1), most) << r << " rows, " << e_count;
    }
  }
  // Shared groups: all tokens each, in token tiles.
  EXPECT_EQ(decode_units_bound(0, 8, 2, 20, 8, 3), 2 * 3 * 3);
}

TEST(GemmHeuristic, BalancedGridSpreadsFewRoundsEvenly) {
  EXPECT_EQ(balanced_grid(288, 132), 96);   // three rounds of 96, not 132 + 132 + 24
  EXPECT_EQ(balanced_grid(96, 132), 96);    // one round: a CTA a unit
  EXPECT_EQ(balanced_grid(133, 132), 67);   // two rounds
  EXPECT_EQ(balanced_grid(528, 132), 132);  // four full rounds
  // Past kBalancedGridMaxRounds rounds every SM streams.
  EXPECT_EQ(balanced_grid(kBalancedGridMaxRounds * 132 + 1, 132), 132);
  EXPECT_EQ(balanced_grid(2080, 132), 132);
  EXPECT_EQ(balanced_grid(0, 132), 132);
}

// FC1 quantizes its own output on the tokens-on-N tiles up to kMaxQuantOnNBlockN tokens where
// its two-tile units fill four rounds of the GPU: not at one token (Qwen3-30B-A3B: 8 experts x 6
// pairs of FC1's 12 weight tiles; DeepSeek-V3: 9 groups x 16 pairs) nor at 8 tokens of Qwen3
// (64 experts x 6), from 8 tokens of DeepSeek-V3 (65 x 16) and 64 of Qwen3 (176 token tiles x 6).
TEST(GemmHeuristic, QuantizeOnNFromFourRoundsOfTwoTileUnits) {
  EXPECT_FALSE(quantize_on_n(8, decode_units_bound(8, 128, 0, 1, 8, 6), 132));    // 48
  EXPECT_FALSE(quantize_on_n(8, decode_units_bound(8, 256, 1, 1, 8, 16), 132));   // 144
  EXPECT_FALSE(quantize_on_n(8, decode_units_bound(64, 128, 0, 8, 8, 6), 132));   // 384
  EXPECT_TRUE(quantize_on_n(8, decode_units_bound(64, 256, 1, 8, 8, 16), 132));   // 1,040
  EXPECT_TRUE(quantize_on_n(8, decode_units_bound(512, 128, 0, 64, 8, 6), 132));  // 1,056
  EXPECT_TRUE(quantize_on_n(64, kQuantOnNMinRounds * 132, 132));
  EXPECT_FALSE(quantize_on_n(64, kQuantOnNMinRounds * 132 - 1, 132));
  // The staging holds the codes of kMaxQuantOnNBlockN tokens; wider tiles are tokens on M.
  EXPECT_FALSE(quantize_on_n(kMaxQuantOnNBlockN * 2, 100000, 132));
  EXPECT_LE(kMaxQuantOnNBlockN * (8 * 4 + 8 + 128 + 16),
            epilogue_smem_bytes(kMaxQuantOnNBlockN, epilogue_rows(kMaxQuantOnNBlockN)));
}

// Where fp8_block's 1x128 scales go to the transposition instead of a 4-byte store per row and
// group (the twenty-sixth and twenty-seventh sessions' measurements): quantize_scatter from
// Qwen3-30B-A3B's 4096 tokens (8 rows a token, 16 groups: 2^19 stores); the gather from
// DeepSeek-V3's 8192 (9 rows, 56 groups: 4.1M), not Qwen3's 16384 (2.1M) nor DeepSeek-V3's 4096.
TEST(GemmHeuristic, ScaleTranspositionThresholds) {
  EXPECT_TRUE(scales_by_token(4096 * 8, 2048));
  EXPECT_FALSE(scales_by_token(2048 * 8, 2048));
  EXPECT_TRUE(scales_by_token(2048 * 9, 7168));
  EXPECT_FALSE(scales_by_token(1024 * 9, 7168));
  EXPECT_TRUE(gather_scales_by_token(8192 * 9, 7168));
  EXPECT_TRUE(gather_scales_by_token(16384 * 9, 7168));
  EXPECT_FALSE(gather_scales_by_token(4096 * 9, 7168));
  EXPECT_FALSE(gather_scales_by_token(16384 * 8, 2048));
}

}  // namespace
}  // namespace moe::grouped
