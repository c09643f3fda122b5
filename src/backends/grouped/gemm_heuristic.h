// Which grouped-GEMM variant runs a problem: pure functions of the problem descriptor,
// header-only so that the CPU tests check them (tests/grouped/).
//
// Tokens sit on wgmma's N side. block_n is the smallest compiled tile that holds 1.5 times the
// rows an active expert is expected to get (decode: 8 rows, one token per expert; prefill: up to
// 256); the rest of shared memory goes to pipeline stages (at most 8) and to the epilogue's
// staging buffers (sm90_grouped_gemm.cuh, step 4): the stages are counted first, with room kept
// for the smallest staging (8-token chunks), and the staging chunk then takes the widest of 32,
// 16 or 8 tokens that fits in what the stages leave (for the compiled tiles, 8 to 256 tokens,
// the staging costs no stage: 192 gets 16-token chunks, the others min(block_n, 32)).
// MOE_GROUPED_DIRECT_EPILOGUE (the epilogue storing from registers) sizes no staging.
// NOTE: 1.5, measured (bench/NOTES.md, H100): the wide tiles are L2-bandwidth bound, so a
// half-empty 256-wide tile beats two full 128-wide ones (Mixtral-8x7B at 512 tokens, 128 rows
// per expert: 1.15 ms at 256 against 1.20 ms at 128; Qwen3-30B-A3B at 512 tokens, 32 rows per
// expert: 0.488 ms at 64 against 0.540 ms at 32).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

namespace moe::grouped {

inline constexpr int kBlockM = 128;  // weight rows per tile (two consumer warpgroups x 64)
inline constexpr int kBlockK = 64;   // one 128-byte swizzle row of bf16 (128 of e4m3)
inline constexpr int kMaxSmemBytes = 227 * 1024;
inline constexpr int kMaxStages = 8;

/// A compiled variant: tokens per tile (wgmma N) and pipeline depth; tokens_on_m: the
/// block-scaled tile with the tokens on wgmma's M side instead (block_n 128 or 192 tokens, one
/// consumer warpgroup per 64, against 128 weight rows).
struct GemmConfig {
  int block_n = 0;
  int num_stages = 0;
  bool tokens_on_m = false;
  /// FC2 on the 128-token tokens-on-M tile: the unit's output staged whole in shared memory
  /// and written by a store warp (kUnitOutStages stages; sm90_grouped_gemm.cuh, kUnitOut).
  bool unit_out = false;
  bool operator==(const GemmConfig&) const = default;
};

/// Bytes of the token scales of one stage (fp8 block scaling: block_n + 4 f32 loaded from a
/// 16-byte aligned start, in a slot aligned to 128 bytes for TMA).
constexpr int scale_slot_bytes(int block_n) { return ((block_n + 4) * 4 + 127) / 128 * 128; }

/// Bytes of one pipeline stage: `weight_tiles` 128-row weight tiles and a block_n-row token
/// tile of one 128-byte K block (64 bf16 or 128 e4m3), and the token scales of fp8 block
/// scaling (counted for every variant, so all share one depth; it changes no depth of the
/// compiled tiles).
constexpr int stage_bytes(int block_n, int weight_tiles = 1) {
  return (weight_tiles * kBlockM + block_n) * kBlockK * 2 + scale_slot_bytes(block_n);
}

/// Bytes of one token row of the epilogue's staging buffer: the widest row one consumer
/// warpgroup writes (FC2: 64 output features of 16 bits), padded by 16 bytes so that the
/// transposed register -> shared writes (8 rows of 16 bytes at a time) hit distinct banks.
inline constexpr int kStagingRowBytes = 64 * 2 + 16;

/// Shared memory of the staged epilogue for `rows` tokens per chunk: per consumer warpgroup
/// two chunk buffers (double-buffered: one barrier per chunk) and the tile's block_n routing
/// weights (f32). Zero under MOE_GROUPED_DIRECT_EPILOGUE.
constexpr int epilogue_smem_bytes(int block_n, int rows) {
#ifdef MOE_GROUPED_DIRECT_EPILOGUE
  (void)block_n;
  (void)rows;
  return 0;
#else
  return 2 /* warpgroups */ * (2 * rows * kStagingRowBytes + block_n * 4);
#endif
}

/// Pipeline depth for a tile width: as many stages as fit next to 8 KB of bookkeeping and the
/// smallest staging of the epilogue (8-token chunks).
constexpr int stages_for(int block_n) {
  return std::min(kMaxStages, (kMaxSmemBytes - 8 * 1024 - epilogue_smem_bytes(block_n, 8)) /
                                  stage_bytes(block_n));
}

/// The token tiles of the tokens-on-M variants (block scaling): one consumer warpgroup per 64.
constexpr bool is_tokens_on_m_block_n(int block_n) { return block_n == 128 || block_n == 192; }

/// Consumer warpgroups of a variant: two (64 weight rows each), or on the tokens-on-M tile one
/// per 64 tokens (sm90_grouped_gemm.cuh, kTokensOnM).
constexpr int consumer_warpgroups(int block_n, bool tokens_on_m) {
  return tokens_on_m ? block_n / 64 : 2;
}

/// Threads of a variant: the producer warpgroup and the consumers.
constexpr int threads_for(int block_n, bool tokens_on_m) {
  return 128 * (1 + consumer_warpgroups(block_n, tokens_on_m));
}

/// Weight tiles per pipeline stage. The tokens-on-M tile of 128 tokens (two consumer
/// warpgroups, 232 registers each) takes two adjacent weight tiles per stage: a unit is its
/// token tile against both, computed K block by K block from one stage (one accumulator, two
/// promoted totals), so the token tile is loaded once for 256 weight rows (175 FLOP per loaded
/// byte instead of 128). The others take one (192 tokens: three warpgroups of 160 registers
/// hold no second total).
/// NOTE: MOE_GROUPED_ONE_WEIGHT_TILE (a build option for A/B runs) keeps one everywhere.
constexpr int weight_tiles_per_stage(int block_n, bool tokens_on_m) {
#ifdef MOE_GROUPED_ONE_WEIGHT_TILE
  (void)block_n;
  (void)tokens_on_m;
  return 1;
#else
  return tokens_on_m && consumer_warpgroups(block_n, tokens_on_m) == 2 ? 2 : 1;
#endif
}

/// The tokens-on-M epilogue's staging: per consumer warp, 16 token rows of 128 bytes (64 bf16
/// or 128 e4m3) padded by 16 so that stmatrix's 8 rows hit distinct banks.
inline constexpr int kWarpStagingStride = 128 + 16;
inline constexpr int kWarpStagingBytes = 16 * kWarpStagingStride;
constexpr int tokens_on_m_staging_bytes(int block_n) {
  return 4 * consumer_warpgroups(block_n, true) * kWarpStagingBytes;
}

/// The unit-output staging of FC2 on the 128-token tokens-on-M tile (GemmConfig::unit_out):
/// the unit's 128 token rows of 256 bf16 output features in y's blocked layout (y_block_offset:
/// each row's 16-byte pieces permuted by its row index, so that stmatrix's 8 rows hit distinct
/// banks), written out as one bulk copy; beside it the ring holds three stages.
inline constexpr int kUnitOutStride = 2 * kBlockM * 2;
inline constexpr int kUnitOutStagingBytes = 128 * kUnitOutStride;
inline constexpr int kUnitOutStages = 3;

/// Pipeline depth of the tokens-on-M tile: as many stages as fit next to 8 KB of bookkeeping
/// and its warps' staging (128 tokens: 4 stages of two weight tiles; 192 tokens: 4).
constexpr int stages_for_tokens_on_m(int block_n) {
  return std::min(kMaxStages, (kMaxSmemBytes - 8 * 1024 - tokens_on_m_staging_bytes(block_n)) /
                                  stage_bytes(block_n, weight_tiles_per_stage(block_n, true)));
}

/// The pipeline depth of a variant (tokens on N or M).
constexpr int stages_for(int block_n, bool tokens_on_m) {
  return tokens_on_m ? stages_for_tokens_on_m(block_n) : stages_for(block_n);
}

/// Tokens per staging chunk of the epilogue: the widest of 32, 16, 8 (at most block_n) whose
/// staging fits beside the stages_for(block_n) stages and the 8 KB of bookkeeping.
constexpr int epilogue_rows(int block_n) {
  const int left = kMaxSmemBytes - 8 * 1024 - stages_for(block_n) * stage_bytes(block_n);
  int rows = std::min(block_n, 32);
  while (rows > 8 && epilogue_smem_bytes(block_n, rows) > left) rows /= 2;
  return rows;
}

/// Dynamic shared memory of a variant (bytes): 1024-byte alignment slack, the stages, the
/// epilogue's staging, the stages' full / empty barriers and the issued barriers of every
/// consumer warpgroup but the last, each stage's unit coordinates (16 bytes), and the [E + 1]
/// row offsets and tile prefix sums.
constexpr int smem_bytes_for(GemmConfig config, int num_experts) {
  const int staging = config.unit_out ? kUnitOutStagingBytes
                      : config.tokens_on_m
                          ? tokens_on_m_staging_bytes(config.block_n)
                          : epilogue_smem_bytes(config.block_n, epilogue_rows(config.block_n));
  // full, empty, the issued rows (unit_out: and the staging's full / empty); then 16 bytes a
  // stage of unit coordinates, 16-byte aligned.
  const int barriers =
      ((1 + consumer_warpgroups(config.block_n, config.tokens_on_m)) * config.num_stages * 8 +
       (config.unit_out ? 16 : 0) + 15) /
          16 * 16 +
      config.num_stages * 16;
  return 1024 +
         config.num_stages * stage_bytes(config.block_n, weight_tiles_per_stage(
                                                             config.block_n, config.tokens_on_m)) +
         staging + barriers + 2 * (num_experts + 1) * 4;
}

/// At most how many work units (a token tile against a 128-row weight tile) a tokens-on-N GEMM
/// gets from `routed_rows` rows on at most `local_experts` experts (an expert with r rows takes
/// ceil(r / block_n) token tiles) and `shared_groups` groups of `tokens` rows, each token tile
/// against `m_tiles` weight tiles. Exact when every routed row has an expert of its own (one
/// token: top-k distinct experts).
inline int64_t decode_units_bound(int64_t routed_rows, int local_experts, int shared_groups,
                                  int64_t tokens, int block_n, int m_tiles) {
  // n experts with rows take at most n + (R - n) / block_n tiles, most when n is largest.
  const int64_t n = std::min<int64_t>(routed_rows, local_experts);
  const int64_t token_tiles =
      n + (routed_rows - n) / block_n + shared_groups * ((tokens + block_n - 1) / block_n);
  return token_tiles * m_tiles;
}

/// Rounds of units up to which a decode FC1 spreads them evenly (balanced_grid).
/// NOTE: measured on the H100 (bench/NOTES.md, fifteenth session), the whole grid against the
/// even one: DeepSeek-V3 at one token (288 units: two rounds of 132 and a third of 24 CTAs
/// streaming at their SMs' intake) 158.3 -> 153.1 us with 96 CTAs of three (FC1 ends 6.7 us
/// sooner); 6 rounds and more lost 0.2-2% (DeepSeek-V3 8 / 512 tokens,
/// Qwen3-30B-A3B 512 tokens: 130, 131, 127 CTAs) -- there every SM's stream counts. 4 and 5
/// rounds not measured.
inline constexpr int kBalancedGridMaxRounds = 4;

/// The persistent grid for `units` work units: up to kBalancedGridMaxRounds rounds on
/// `num_sms` SMs, the fewest CTAs that take them in as many rounds (one unit a CTA a round, the
/// rounds as even as they go); more units, every SM.
inline int balanced_grid(int64_t units, int num_sms) {
  const int64_t rounds = (units + num_sms - 1) / num_sms;
  if (units <= 0 || rounds > kBalancedGridMaxRounds) return num_sms;
  return static_cast<int>((units + rounds - 1) / rounds);
}

/// The widest token tile of FC1 on the tokens-on-N tile writing its output in e4m3 with its
/// 1x128 scales (GemmTypes out e4m3, block scaling): a unit is the token tile against two
/// adjacent weight tiles, its tokens' 128-byte code rows staged in the epilogue's buffers.
inline constexpr int kMaxQuantOnNBlockN = 64;

/// Rounds of two-tile units (per SM) from which FC1 on the tokens-on-N tile quantizes its own
/// output (quantize_on_n): its units are then two weight tiles each, half as many, and where
/// they are few the grid's last round and its trimmed CTAs (balanced_grid) cost more than the
/// 1x128 kernel saved. NOTE: measured on the H100 (bench/NOTES.md, twenty-first session): Qwen3-
/// 30B-A3B 512 tokens (1,440 two-tile units, ~11 rounds) -5.5%, 64 tokens (~8 rounds) -1.4%,
/// DeepSeek-V3 64 tokens -1%, 8 tokens (~8 rounds) and 512 tokens within noise; Qwen3 8 tokens
/// (~2.9 rounds, FC1 on 128 CTAs) +0.5-1% -- there FC1 ended 3.4 us later; at one token (48 and
/// 144 units) the fifteenth session measured FC1 on half the CTAs 2 us slower. Hence 4 rounds,
/// where balanced_grid stops trimming the grid.
inline constexpr int kQuantOnNMinRounds = kBalancedGridMaxRounds;

/// Whether FC1 on a tokens-on-N tile of `block_n` tokens writes the intermediate in e4m3 itself
/// (block scaling): where that variant exists and its two-tile units (`units_bound`,
/// decode_units_bound over the pairs of weight tiles) fill kQuantOnNMinRounds rounds of
/// `num_sms`.
inline bool quantize_on_n(int block_n, int64_t units_bound, int num_sms) {
  return block_n <= kMaxQuantOnNBlockN && units_bound >= int64_t{kQuantOnNMinRounds} * num_sms;
}

/// Expected rows per active expert when `total_rows` rows land on `num_experts` experts at
/// random: total / (E * (1 - (1 - 1/E)^total)).
inline double rows_per_active_expert(int64_t total_rows, int num_experts) {
  if (total_rows <= 0) return 0.0;
  const double e = std::max(1, num_experts);
  const double active = e * (1.0 - std::pow(1.0 - 1.0 / e, static_cast<double>(total_rows)));
  return static_cast<double>(total_rows) / std::max(active, 1.0);
}

/// The variant for a problem, among the compiled tile widths (ascending).
inline GemmConfig choose_gemm_config(int64_t total_rows, int num_experts,
                                     std::span<const int> block_ns) {
  const double rows = rows_per_active_expert(total_rows, num_experts);
  int block_n = block_ns.back();
  for (int b : block_ns) {
    if (b >= 1.5 * rows) {
      block_n = b;
      break;
    }
  }
  return {block_n, stages_for(block_n)};
}

/// Expected rows per active expert from which block-scaled e4m3 takes a tile wider than 128.
/// NOTE: measured on the H100 twice. Tokens on N (sixth session, MOE_GROUPED_BLOCK_N sweep):
/// 192 lost to 128 at 128 and 256 rows per expert and won from 512. Tokens on M (ninth session,
/// 192 tokens = three consumer warpgroups against two): layer -6% at 512 and 1024 rows
/// (DeepSeek-V3 at 16384 tokens 18.2 -> 17.1-17.2 ms, Qwen3-30B-A3B 2.15 -> 2.00-2.04), +3% at
/// 256 (Qwen3 at 4096: the padding of a second, mostly empty 192 tile), +1..+7% at 64-128 on
/// DeepSeek-V3 (2048 / 4096 tokens), -7% at 128 on Qwen3 (2048): the threshold stayed at 384.
/// Eleventh session, the 128 tile taking two weight tiles a stage (weight_tiles_per_stage):
/// against it the 192 tile measured +5% at DeepSeek-V3 16384 tokens (512 rows, the bench's
/// skewed routing: 16.4-16.6 against 15.7 ms), +0.8% at Qwen3 16384 (1024 rows: 1.75-1.76
/// against 1.74 ms), -1.4% at Qwen3 8192 (512 rows, uniform: 0.906 against 0.918): 192 now from
/// above the rows measured, where its padding is smallest.
inline constexpr double kBlockScaledWideRows = 1536.0;

/// Whether block-scaled tiles of 128 tokens and more run the tokens-on-M 128 x 128 tile.
/// NOTE: the promotion then costs 4 FMUL + 64 FFMA per K block per thread instead of 32 LDS +
/// 64 FMUL + 64 FFMA (sm90_grouped_gemm.cuh, kTokensOnM; docs/notes/fp8-promotion-cost.md).
inline constexpr bool kBlockScaledTokensOnM = true;

/// The tokens-on-M variant for a token tile of `block_n` >= 128 tokens: 192 tokens (three
/// consumer warpgroups) where block_n is that wide and 192 is compiled, else 128.
inline GemmConfig tokens_on_m_config(int block_n, std::span<const int> block_ns) {
  const bool has_192 = std::find(block_ns.begin(), block_ns.end(), 192) != block_ns.end();
  const int b = block_n >= 192 && has_192 ? 192 : 128;
  return {b, stages_for_tokens_on_m(b), true};
}

/// The variant for a block-scaled e4m3 problem: choose_gemm_config's rule among the tiles up
/// to 128 tokens, and among all of them from kBlockScaledWideRows expected rows per expert;
/// a tile of 128 tokens or more becomes the tokens-on-M tile of its width (tokens_on_m_config)
/// when `tokens_on_m`.
inline GemmConfig choose_block_scaled_config(int64_t total_rows, int num_experts,
                                             std::span<const int> block_ns,
                                             bool tokens_on_m = kBlockScaledTokensOnM) {
  GemmConfig config;
  if (rows_per_active_expert(total_rows, num_experts) >= kBlockScaledWideRows) {
    config = choose_gemm_config(total_rows, num_experts, block_ns);
  } else {
    const auto narrow =
        std::count_if(block_ns.begin(), block_ns.end(), [](int b) { return b <= 128; });
    config =
        choose_gemm_config(total_rows, num_experts,
                           narrow > 0 ? block_ns.first(static_cast<size_t>(narrow)) : block_ns);
  }
  const bool has_128 = std::find(block_ns.begin(), block_ns.end(), 128) != block_ns.end();
  if (tokens_on_m && has_128 && config.block_n >= 128) {
    return tokens_on_m_config(config.block_n, block_ns);
  }
  return config;
}

}  // namespace moe::grouped
