// The grouped backend's e4m3 modes on the GPU: fp8_per_tensor and fp8_block (DeepSeek 128x128
// weight blocks, 1x128 activation groups) against the reference backend, which applies the
// same activation quantization, on fresh random inputs with outputs poisoned first: every
// preset family scaled down, partial 128-blocks, a DeepSeek-style FP8 checkpoint written and
// read back, CUDA-graph capture; the block-scaled GEMM alone against float64 for every tile;
// quantize_input bit for bit against the CPU quantizer; can_implement's reasons.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/moe_kernels.h"
#include "backends/grouped/tma_map.h"
#include "core/random.h"
#include "gpu_grouped/grouped_test_util.h"
#include "moe/checkpoint.h"
#include "quant/formats.h"
#include "quant/fp8_quant_kernels.h"
#include "quant/quantizers.h"

namespace moe {
namespace {

using testing::expect_matches_reference;
using testing::poison_device;
using testing::random_routing;
using testing::random_x;
using testing::Routed;
using testing::run_backend;
using testing::to_device;
using testing::to_host;

MoeConfig scaled_fp8(const std::string& name, QuantMode quant, int hidden = 256, int inter = 128) {
  MoeConfig c = testing::scaled(name, hidden, inter);
  c.quant = quant;
  c.validate();
  return c;
}

class GroupedFp8Family : public ::testing::TestWithParam<std::tuple<std::string, QuantMode>> {};

TEST_P(GroupedFp8Family, MatchesReference) {
  MOE_REQUIRE_HOPPER();
  const auto& [name, quant] = GetParam();
  const MoeConfig c = scaled_fp8(name, quant);
  const Capability cap = grouped_backend_entry().can_implement(c, Mapping{}, DeviceInfo::detect());
  ASSERT_TRUE(cap.ok) << cap.reason;
  for (int64_t t : {1, 5, 64, 200}) expect_matches_reference(c, t, 2000 + t);
}

INSTANTIATE_TEST_SUITE_P(Presets, GroupedFp8Family,
                         ::testing::Combine(::testing::ValuesIn(preset_names()),
                                            ::testing::Values(QuantMode::kFP8PerTensor,
                                                              QuantMode::kFP8Block)),
                         testing::PresetQuantName());

TEST(GroupedFp8, PartialBlocksAndEdgeShapes) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : {QuantMode::kFP8PerTensor, QuantMode::kFP8Block}) {
    // H and I not multiples of 128 (nor of the 128-row tile): partial K blocks, partial
    // weight tiles and a partial last 1x128 group of the intermediate.
    MoeConfig odd = scaled_fp8("mixtral-8x7b", q, 208, 80);
    expect_matches_reference(odd, 37, 8);
    expect_matches_reference(odd, 1, 9);
    MoeConfig hot = scaled_fp8("qwen3-30b-a3b", q);
    expect_matches_reference(hot, 131, 5, /*hot=*/3);  // every token on expert 3
    MoeConfig big = scaled_fp8("mixtral-8x7b", q, 512, 256);
    big.max_num_tokens = 2048;
    expect_matches_reference(big, 2048, 11);  // the widest tiles
  }
}

// Both e4m3 modes: run_moe on the act_dtype rows (quantized once per token and scattered to its
// rows with the gather) equals quantize_input + run_moe bit for bit -- shared experts, a
// partial last 1x128 group (H = 208), every token on one expert, one token, the widest tiles
// (per-tensor's prefill tiles at 2048 tokens); per-tensor also with x 16 times larger than its
// static input scale is sized for, so that codes saturate at 448.
TEST(GroupedFp8, RowsInRunMoeEqualQuantizeInputBitForBit) {
  MOE_REQUIRE_HOPPER();
  struct Case {
    MoeConfig c;
    int64_t t;
    int hot;
    int x_scale;
  };
  for (QuantMode q : {QuantMode::kFP8Block, QuantMode::kFP8PerTensor}) {
    MoeConfig big = scaled_fp8("qwen3-30b-a3b", q, 512, 256);
    big.max_num_tokens = 2048;
    std::vector<Case> cases = {
        {scaled_fp8("deepseek-v3", q), 1, -1, 1},
        {scaled_fp8("deepseek-v3", q), 300, -1, 1},
        {scaled_fp8("mixtral-8x7b", q, 208, 80), 37, -1, 1},
        {scaled_fp8("qwen3-30b-a3b", q), 131, 3, 1},
        {big, 2048, -1, 1},
    };
    if (q == QuantMode::kFP8PerTensor) {
      cases.push_back({scaled_fp8("deepseek-v3", q), 300, -1, 16});
      cases.push_back({big, 2048, -1, 16});
    } else {
      // Enough rows x groups that quantize_scatter writes the scales token-major and transposes
      // them (grouped::scales_by_token; quantize_input's path stores them by row in the gather
      // below grouped::gather_scales_by_token: GroupedFp8.GatherTransposedScales): Qwen3-30B-A3B
      // at H = 2048, and DeepSeek-V3's routing with its shared expert.
      MoeConfig wide = scaled_fp8("qwen3-30b-a3b", q, 2048, 256);
      wide.max_num_tokens = 8192;
      MoeConfig ds = scaled_fp8("deepseek-v3", q, 2048, 128);
      ds.max_num_tokens = 8192;
      cases.push_back({wide, 8192, -1, 1});
      cases.push_back({ds, 8192, -1, 1});
    }
    for (const Case& k : cases) {
      SCOPED_TRACE(std::string(quant_mode_name(q)) + " " + k.c.name +
                   " H=" + std::to_string(k.c.hidden_size) + " T=" + std::to_string(k.t) + " x*" +
                   std::to_string(k.x_scale));
      auto w = make_random_weights(k.c, 40 + k.t);
      Tensor x = random_x(k.c, k.t, 41 + k.t);
      int saturated = 0;
      if (k.x_scale != 1) {
        ASSERT_EQ(x.dtype(), DType::kBF16);
        uint16_t* e = x.data_as<uint16_t>();
        for (int64_t i = 0; i < x.numel(); ++i) {
          const float v = fmt::bf16_to_float(e[i]) * static_cast<float>(k.x_scale);  // exact
          e[i] = fmt::float_to_bf16(v);
          saturated += std::fabs(v) > 6.0f;  // the random checkpoint's s_in = 6 / 448
        }
        ASSERT_GT(saturated, 0) << "no code saturates";
      }
      const Routed r = random_routing(k.c, k.t, 42 + k.t, k.hot);
      const bool shared = k.c.num_shared_experts > 0;
      if (q == QuantMode::kFP8Block && k.t >= 4096) {
        const int64_t rows = k.t * (k.c.top_k + k.c.num_shared_experts);
        ASSERT_TRUE(grouped::scales_by_token(rows, k.c.hidden_size))
            << "the case no longer reaches the transposed scales";
      }
      const Tensor want = run_backend(grouped_backend_entry(), k.c, *w, x, r, shared, true);
      const Tensor got = run_backend(grouped_backend_entry(), k.c, *w, x, r, shared, true,
                                     /*rows_in=*/true);
      ASSERT_EQ(got.nbytes(), want.nbytes());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.nbytes()), 0);
    }
  }
}

// Block scaling at small batches: FC1 on the tokens-on-N tile quantizing the intermediate
// itself (grouped::quantize_on_n: two-tile units) gives the layer of the bf16 FC1 and the 1x128
// kernel (MOE_GROUPED_QUANT_ON_N=0) bit for bit, and the reference's numbers: Qwen3-30B-A3B's
// 128 experts and FC1 tiles (I = 768: six pairs) at 64 tokens; DeepSeek-V3's routing with its
// shared expert and I = 2,112 (33 weight tiles: the last pair one tile, the last group 64
// features) at 64 tokens. Each case is checked to take the fused path on this GPU.
TEST(GroupedFp8, TokensOnNQuantizationEqualsTheUnfusedLayer) {
  MOE_REQUIRE_HOPPER();
  MoeConfig qwen = scaled_fp8("qwen3-30b-a3b", QuantMode::kFP8Block, 256, 768);
  qwen.num_experts = 128;
  qwen.top_k = 8;
  qwen.validate();
  MoeConfig ds = scaled_fp8("deepseek-v3", QuantMode::kFP8Block, 256, 2112);
  const int num_sms = DeviceInfo::detect().num_sms;
  for (const MoeConfig& c : {qwen, ds}) {
    const int64_t t = 64;
    SCOPED_TRACE(c.name + " T=" + std::to_string(t));
    const bool shared = c.num_shared_experts > 0;
    const int shared_groups = shared ? 1 : 0;
    const int64_t rows = t * (c.top_k + shared_groups);
    const grouped::GemmConfig cfg =
        grouped::choose_gemm_config(rows, c.num_experts + shared_groups, grouped::Scaling::kBlock);
    const int pairs = (2 * c.intermediate_size + 255) / 256;
    ASSERT_FALSE(cfg.tokens_on_m);
    ASSERT_TRUE(
        grouped::quantize_on_n(cfg.block_n,
                               grouped::decode_units_bound(t * c.top_k, c.num_experts,
                                                           shared_groups, t, cfg.block_n, pairs),
                               num_sms))
        << "block_n " << cfg.block_n << ": the case does not take the fused path";
    auto w = make_random_weights(c, 60);
    const Tensor x = random_x(c, t, 61);
    const Routed r = random_routing(c, t, 62);
    ASSERT_EQ(setenv("MOE_GROUPED_QUANT_ON_N", "0", 1), 0);
    const Tensor unfused = run_backend(grouped_backend_entry(), c, *w, x, r, shared, true);
    ASSERT_EQ(unsetenv("MOE_GROUPED_QUANT_ON_N"), 0);
    const Tensor fused = run_backend(grouped_backend_entry(), c, *w, x, r, shared, true);
    ASSERT_EQ(fused.nbytes(), unfused.nbytes());
    EXPECT_EQ(std::memcmp(fused.data(), unfused.data(), fused.nbytes()), 0);
    const Tensor want = run_backend(reference_backend_entry(), c, *w, x, r, shared, false);
    EXPECT_LE(relative_l2(fused, want), layer_tolerance(c.quant));
  }
}

// fp8_per_tensor at prefill: where fp8_block takes a tokens-on-M tile, so does per-tensor,
// without promotion (alpha at the unit's end, FC1 writing the intermediate in e4m3 at its static
// scale). Against the reference and against its own tokens-on-N tiles (MOE_GROUPED_PER_TENSOR_ON_M
// =0): the same products in the same K order on the other side of wgmma, so the two agree to
// the rounding of the epilogue's alpha and bias (bit for bit without biases on the H100). Partial
// 128-blocks and a partial last weight tile (H = 208, I = 80), a shared expert (DeepSeek-V3's
// routing), every token on one expert, SwiGLU-OAI with biases (GPT-OSS), and the 192-token tile.
TEST(GroupedFp8, PerTensorPrefillOnTheTokensOnMTiles) {
  MOE_REQUIRE_HOPPER();
  struct Case {
    MoeConfig c;
    int64_t t;
    int hot;
  };
  const Case cases[] = {
      {scaled_fp8("mixtral-8x7b", QuantMode::kFP8PerTensor, 208, 80), 600, -1},
      {scaled_fp8("deepseek-v3", QuantMode::kFP8PerTensor), 1024, -1},
      {scaled_fp8("qwen3-30b-a3b", QuantMode::kFP8PerTensor), 256, 3},
      {scaled_fp8("gpt-oss-120b", QuantMode::kFP8PerTensor), 1024, -1},
      {scaled_fp8("mixtral-8x7b", QuantMode::kFP8PerTensor, 512, 256), 8192, -1},
  };
  for (const Case& k : cases) {
    MoeConfig c = k.c;
    c.max_num_tokens = static_cast<int>(std::max<int64_t>(c.max_num_tokens, k.t));
    SCOPED_TRACE(c.name + " H=" + std::to_string(c.hidden_size) + " T=" + std::to_string(k.t));
    const bool shared = c.num_shared_experts > 0;
    const int shared_groups = shared ? c.shared_intermediate_size / c.intermediate_size : 0;
    const int64_t rows = k.t * (c.top_k + shared_groups);
    ASSERT_TRUE(
        grouped::choose_gemm_config(rows, c.num_experts + shared_groups, grouped::Scaling::kBlock)
            .tokens_on_m)
        << "the case does not take the tokens-on-M tiles";
    auto w = make_random_weights(c, 70 + k.t);
    const Tensor x = random_x(c, k.t, 71 + k.t);
    const Routed r = random_routing(c, k.t, 72 + k.t, k.hot);
    ASSERT_EQ(setenv("MOE_GROUPED_PER_TENSOR_ON_M", "0", 1), 0);
    const Tensor own = run_backend(grouped_backend_entry(), c, *w, x, r, shared, true);
    ASSERT_EQ(unsetenv("MOE_GROUPED_PER_TENSOR_ON_M"), 0);
    const Tensor got = run_backend(grouped_backend_entry(), c, *w, x, r, shared, true);
    const Tensor want = run_backend(reference_backend_entry(), c, *w, x, r, shared, false);
    EXPECT_LE(relative_l2(got, want), layer_tolerance(c.quant));
    EXPECT_LE(relative_l2(own, want), layer_tolerance(c.quant));
    EXPECT_LE(relative_l2(got, own), 1e-4);
  }
}

// As Grouped.OddWeightTileCounts: three 128-row weight tiles in FC1 and FC2, many rows per
// expert (the 2-CTA cluster variant's lone last tile; ctest gpu_grouped_cluster2).
TEST(GroupedFp8, OddWeightTileCounts) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : {QuantMode::kFP8PerTensor, QuantMode::kFP8Block}) {
    MoeConfig c = scaled_fp8("mixtral-8x7b", q, 384, 160);
    expect_matches_reference(c, 512, 23);
    expect_matches_reference(c, 3, 24);
  }
}

TEST(GroupedFp8, CanImplementSaysWhyNot) {
  const DeviceInfo hopper = [] {
    DeviceInfo d = DeviceInfo::cpu_only();
    d.cuda_built = true;
    d.has_cuda = true;
    d.sm_major = 9;
    d.sm_minor = 0;
    d.num_sms = 132;
    return d;
  }();
  MoeConfig f16 = scaled_fp8("mixtral-8x7b", QuantMode::kFP8Block);
  f16.act_dtype = DType::kF16;
  Capability c = grouped_backend_entry().can_implement(f16, Mapping{}, hopper);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.reason.find("f16 activations"), std::string::npos) << c.reason;

  MoeConfig rows = scaled_fp8("mixtral-8x7b", QuantMode::kFP8PerTensor, 264, 128);
  c = grouped_backend_entry().can_implement(rows, Mapping{}, hopper);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.reason.find("multiples of 16"), std::string::npos) << c.reason;

  // Two shared groups of an I that is not a multiple of 128: the second group's K blocks
  // would straddle the checkpoint's 128-column blocks.
  MoeConfig shared = scaled_fp8("deepseek-v2-lite", QuantMode::kFP8Block, 256, 80);
  ASSERT_EQ(shared.shared_intermediate_size, 2 * 80);
  c = grouped_backend_entry().can_implement(shared, Mapping{}, hopper);
  EXPECT_FALSE(c.ok);
  EXPECT_FALSE(c.reason.empty());

  MoeConfig ok = scaled_fp8("deepseek-v3", QuantMode::kFP8Block);
  c = grouped_backend_entry().can_implement(ok, Mapping{}, hopper);
  EXPECT_TRUE(c.ok) << c.reason;
}

// A DeepSeek-style FP8 checkpoint (weight_scale_inv 128x128 blocks, partial blocks at the
// edges) written to disk, opened as a user would, run by grouped and by reference.
TEST(GroupedFp8, DeepSeekCheckpointWithPartialBlocks) {
  MOE_REQUIRE_HOPPER();
  MoeConfig c = scaled_fp8("deepseek-v3", QuantMode::kFP8Block, 272, 208);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("moe_grouped_fp8_ckpt_" + std::to_string(::getpid()));
  save_checkpoint_layer(dir.string(), c, *make_random_weights(c, 17), 0);
  const MoeConfig read = checkpoint_layer_config(dir.string(), 0);
  EXPECT_EQ(read.quant, QuantMode::kFP8Block);
  CheckpointLayer layer = open_checkpoint_layer(dir.string(), c, 0);
  const Tensor x = random_x(c, 45, 18);
  const Routed r = random_routing(c, 45, 18);
  const Tensor got = run_backend(grouped_backend_entry(), c, *layer.source, x, r, true, true);
  const Tensor want = run_backend(reference_backend_entry(), c, *layer.source, x, r, true, false);
  EXPECT_LE(relative_l2(got, want), layer_tolerance(c.quant));
  std::filesystem::remove_all(dir);
}

TEST(GroupedFp8, LayerCapturedInACudaGraph) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : {QuantMode::kFP8Block, QuantMode::kFP8PerTensor}) {
    testing::expect_graph_replay_matches_reference(scaled_fp8("deepseek-v3", q), 40, 4, {31, 32});
  }
}

// quantize_input (the backend's own) bit for bit against the CPU quantizer.
TEST(GroupedFp8, QuantizeInputIsTheCpuQuantizer) {
  MOE_REQUIRE_HOPPER();
  const MoeConfig c = scaled_fp8("deepseek-v3", QuantMode::kFP8Block, 272, 208);
  auto w = make_random_weights(c, 5);
  auto backend = grouped_backend_entry().create(c, Mapping{}, DeviceInfo::detect());
  backend->create_weights();
  backend->load_weights(*w, LoadMode::kVanilla);
  backend->process_weights_after_loading();
  const int64_t t = 19, h = c.hidden_size, groups = (h + 127) / 128;
  const Tensor x = random_x(c, t, 6);
  const Tensor xd = to_device(x);
  const QuantizedInput q = backend->quantize_input(xd, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> xf(t * h);
  for (int64_t i = 0; i < t * h; ++i) xf[i] = fmt::bf16_to_float(x.data_as<uint16_t>()[i]);
  std::vector<uint8_t> want_q(t * h);
  std::vector<float> want_s(t * groups);
  quant::quantize_fp8_act_1x128(xf.data(), t, h, false, want_q.data(), want_s.data());
  const Tensor got_q = to_host(q.data), got_s = to_host(q.scales);
  ASSERT_EQ(got_q.nbytes(), want_q.size());
  ASSERT_EQ(got_s.numel(), t * groups);
  EXPECT_EQ(std::memcmp(got_q.data(), want_q.data(), want_q.size()), 0);
  EXPECT_EQ(std::memcmp(got_s.data(), want_s.data(), want_s.size() * 4), 0);
}

// The gather of e4m3 rows (quantize_input's path: expert parallelism's post-quant dispatch)
// with its 1x128 scales stored by row in the gather, and left to transpose_scales_kernel
// (GatherParams::transpose_scales): both equal the host's x_perm[r] = x[row_token[r]] and
// scales_t[g][r] = scales[row_token[r]][g] for r < *total_rows, and leave the rows past it and
// the ld padding as poisoned. DeepSeek-V3's 56 groups (7 chunks of 8), 11 groups (a partial
// chunk), 2 groups; a launch bound past the row count.
TEST(GroupedFp8, GatherTransposedScales) {
  MOE_REQUIRE_HOPPER();
  struct Case {
    int t, rows, bound, hidden;
  };
  for (const Case& k :
       {Case{1200, 3000, 3100, 7168}, Case{5000, 4999, 4999, 1408}, Case{300, 777, 800, 208}}) {
    SCOPED_TRACE("T=" + std::to_string(k.t) + " rows " + std::to_string(k.rows) +
                 " H=" + std::to_string(k.hidden));
    const int groups = (k.hidden + 127) / 128;
    const int64_t ld = quant::fp8_scale_ld(k.bound);
    std::vector<uint8_t> x(size_t(k.t) * k.hidden);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>(uniform_at(7, i) * 256.0f);
    std::vector<float> scales(size_t(k.t) * groups);
    for (size_t i = 0; i < scales.size(); ++i) scales[i] = 1e-3f + uniform_at(8, i);
    std::vector<int32_t> row_token(k.bound);
    for (int r = 0; r < k.bound; ++r) {
      row_token[r] = std::min(k.t - 1, static_cast<int>(uniform_at(9, r) * k.t));
    }
    const int32_t total = k.rows;
    Tensor xd = to_device(TensorView(x.data(), DType::kE4M3, {k.t, k.hidden}));
    Tensor sd = to_device(TensorView(scales.data(), DType::kF32, {k.t, groups}));
    Tensor rtd = to_device(TensorView(row_token.data(), DType::kI32, {k.bound}));
    Tensor totd = to_device(TensorView(const_cast<int32_t*>(&total), DType::kI32, {1}));
    std::vector<uint8_t> want_x(size_t(k.bound) * k.hidden, 0xFF);
    std::vector<float> want_s(size_t(groups) * ld);
    std::memset(want_s.data(), 0xFF, want_s.size() * 4);
    for (int r = 0; r < k.rows; ++r) {
      std::memcpy(&want_x[size_t(r) * k.hidden], &x[size_t(row_token[r]) * k.hidden], k.hidden);
      for (int g = 0; g < groups; ++g) {
        want_s[size_t(g) * ld + r] = scales[size_t(row_token[r]) * groups + g];
      }
    }
    for (const bool transpose : {false, true}) {
      SCOPED_TRACE(transpose ? "transposed" : "stored by the gather");
      Tensor x_perm = Tensor::empty({k.bound, k.hidden}, DType::kE4M3, Device::cuda(0));
      Tensor scales_t = Tensor::empty({groups, ld}, DType::kF32, Device::cuda(0));
      poison_device(x_perm);
      poison_device(scales_t);
      grouped::GatherParams p;
      p.x = xd.data();
      p.x_perm = x_perm.data();
      p.row_token = rtd.data_as<const int32_t>();
      p.total_rows = totd.data_as<const int32_t>();
      p.max_rows = k.bound;
      p.hidden = k.hidden;
      p.scales = sd.data_as<const float>();
      p.scales_t = scales_t.data_as<float>();
      p.scale_groups = groups;
      p.scales_ld = ld;
      p.dependents_at_start = true;  // ignored when transposing
      p.transpose_scales = transpose;
      grouped::launch_gather(p, DType::kE4M3, nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());
      const Tensor got_x = to_host(x_perm), got_s = to_host(scales_t);
      EXPECT_EQ(std::memcmp(got_x.data(), want_x.data(), want_x.size()), 0);
      EXPECT_EQ(std::memcmp(got_s.data(), want_s.data(), want_s.size() * 4), 0);
    }
  }
}

// The e4m3 GEMM alone, every tile width and the tokens-on-M tiles, FC2 epilogue, against float64
// on exactly representable operands: block scaling D = sum_kb (W X^T)_kb * wscale * xscale * row
// weight; per-tensor D = (W X^T) * wscale[e] * act_scale * row weight (its tokens-on-M tiles
// without promotion). n: weight rows (partial last tile; odd tile counts leave the 128-token
// tile's last pair of weight tiles with one).
void check_every_tile_width(int n, grouped::Scaling scaling) {
  const bool block = scaling == grouped::Scaling::kBlock;
  SCOPED_TRACE("n " + std::to_string(n) + (block ? ", block-scaled" : ", per-tensor"));
  const int g = 5, k = 336;  // partial K block
  const int mt = (n + 127) / 128, kb = (k + 127) / 128;
  const std::vector<int> counts = {3, 0, 150, 41, 230};  // 230: two tiles of 128 or 192
  std::vector<int32_t> offsets(g + 1, 0);
  for (int e = 0; e < g; ++e) offsets[e + 1] = offsets[e] + counts[e];
  const int rows = offsets[g];
  const int64_t ld = quant::fp8_scale_ld(rows);
  // e4m3 codes with |value| <= 8 (no NaN), scales in [0.5, 2).
  auto code = [](uint64_t seed, int64_t i) {
    const uint8_t c = static_cast<uint8_t>(uniform_at(seed, i) * 256.0f);
    return static_cast<uint8_t>((c & 0x80) | std::min<uint8_t>(c & 0x7F, 0x50));
  };
  std::vector<uint8_t> w(size_t(g) * n * k), x(size_t(rows) * k);
  for (size_t i = 0; i < w.size(); ++i) w[i] = code(1, i);
  for (size_t i = 0; i < x.size(); ++i) x[i] = code(2, i);
  std::vector<float> ws(block ? size_t(g) * mt * kb : size_t(g)), xs(size_t(kb) * ld, 1.0f),
      rw(rows);
  for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.5f + 1.5f * uniform_at(3, i);
  float act_scale = 0.75f;
  for (int b = 0; b < kb; ++b)
    for (int r = 0; r < rows; ++r)
      xs[size_t(b) * ld + r] = 0.5f + 1.5f * uniform_at(4, b * rows + r);
  for (int r = 0; r < rows; ++r) rw[r] = 0.5f + uniform_at(5, r);
  std::vector<double> want(size_t(rows) * n);
  for (int e = 0; e < g; ++e) {
    for (int r = offsets[e]; r < offsets[e + 1]; ++r) {
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int q = 0; q < k; ++q) {
          const double scale = block ? double(ws[(size_t(e) * mt + j / 128) * kb + q / 128]) *
                                           xs[size_t(q / 128) * ld + r]
                                     : 1.0;
          s += double(fmt::e4m3_to_float(w[(size_t(e) * n + j) * k + q])) *
               fmt::e4m3_to_float(x[size_t(r) * k + q]) * scale;
        }
        want[size_t(r) * n + j] = s * rw[r] * (block ? 1.0 : double(ws[e]) * act_scale);
      }
    }
  }
  Tensor wd = to_device(TensorView(w.data(), DType::kE4M3, {g, n, k}));
  Tensor xd = to_device(TensorView(x.data(), DType::kE4M3, {rows, k}));
  Tensor wsd = to_device(TensorView(ws.data(), DType::kF32, {int64_t(ws.size())}));
  Tensor xsd = to_device(TensorView(xs.data(), DType::kF32, {kb, ld}));
  Tensor rwd = to_device(TensorView(rw.data(), DType::kF32, {rows}));
  Tensor asd = to_device(TensorView(&act_scale, DType::kF32, {1}));
  Tensor offd = to_device(TensorView(offsets.data(), DType::kI32, {g + 1}));
  Tensor out = Tensor::empty({rows, n}, DType::kBF16, Device::cuda(0));
  const CUtensorMap wmap = grouped::make_weight_map(wd.data(), DType::kE4M3, g, n, k);
  const int num_sms = DeviceInfo::detect().num_sms;
  int tried = 0;
  std::vector<grouped::GemmConfig> configs;
  for (int block_n : {8, 16, 32, 64, 128, 192, 256}) {
    if (grouped::is_supported_block_n(block_n, scaling)) {
      configs.push_back(grouped::gemm_config_for_block_n(block_n));
    }
  }
  // The tokens-on-M tiles: 128 tokens (two consumer warpgroups), 192 (three) where compiled (the
  // block-scaled list's, for both scalings).
  for (int block_n : {128, 192}) {
    if (grouped::is_supported_block_n(block_n, grouped::Scaling::kBlock)) {
      configs.push_back({block_n, grouped::stages_for_tokens_on_m(block_n), /*tokens_on_m=*/true});
    }
  }
  std::vector<double> tokens_on_m_128;  // the 128-token tokens-on-M tile's row-major y
  auto params = [&](void* y) {
    grouped::GroupedGemmParams p;
    p.num_experts = g;
    p.n = n;
    p.k = k;
    p.expert_offsets = offd.data_as<int32_t>();
    p.out = y;
    p.row_weights = rwd.data_as<float>();
    p.w_scales = wsd.data_as<float>();
    if (!block) p.act_scale = asd.data_as<float>();
    return p;
  };
  for (const grouped::GemmConfig& config : configs) {
    const int block_n = config.block_n;
    ++tried;
    const CUtensorMap xmap = grouped::make_rows_map(xd.data(), DType::kE4M3, rows, k, block_n);
    CUtensorMap smap{};
    if (block) {
      smap =
          grouped::make_scales_map(xsd.data_as<float>(), kb, ld, grouped::scale_box_rows(block_n));
    }
    poison_device(out);
    grouped::launch_grouped_gemm(params(out.data()), wmap, xmap, block ? &smap : nullptr, config,
                                 grouped::Epilogue::kRoutingWeight,
                                 {DType::kE4M3, DType::kBF16, scaling}, num_sms, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<double> got = to_doubles(to_host(out));
    EXPECT_LE(relative_l2(got, want), 5e-3)
        << "block_n " << block_n << (config.tokens_on_m ? ", tokens on M" : "");
    if (config.tokens_on_m && block_n == 128) tokens_on_m_128 = got;
  }
  EXPECT_GE(tried, 4);
  // The 128-token tokens-on-M tile writing y's blocked layout (out_scales_ld = its block rows:
  // the unit output staged whole and stored by the store warp): the same values, bit for bit,
  // at grouped::y_block_offset.
  {
    ASSERT_FALSE(tokens_on_m_128.empty());
    const int blocks = (n + 255) / 256;
    Tensor yb = Tensor::empty({int64_t(blocks) * rows * 256}, DType::kBF16, Device::cuda(0));
    poison_device(yb);
    const CUtensorMap xmap = grouped::make_rows_map(xd.data(), DType::kE4M3, rows, k, 128);
    const CUtensorMap smap =
        grouped::make_scales_map(xsd.data_as<float>(), kb, ld, grouped::scale_box_rows(128));
    grouped::GroupedGemmParams p = params(yb.data());
    p.out_scales_ld = rows;
    grouped::launch_grouped_gemm(
        p, wmap, xmap, block ? &smap : nullptr, {128, grouped::stages_for_tokens_on_m(128), true},
        grouped::Epilogue::kRoutingWeight, {DType::kE4M3, DType::kBF16, scaling}, num_sms, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<double> blocked = to_doubles(to_host(yb));
    std::vector<double> got(size_t(rows) * n);
    for (int r = 0; r < rows; ++r) {
      for (int j = 0; j < n; ++j) {
        got[size_t(r) * n + j] = blocked[grouped::y_block_offset(r, j & ~7, rows) + (j & 7)];
      }
    }
    EXPECT_EQ(got, tokens_on_m_128) << "blocked y";
    EXPECT_LE(relative_l2(got, want), 5e-3) << "blocked y";
    // Only the 128-token tokens-on-M tile writes the blocked layout.
    EXPECT_THROW(grouped::launch_grouped_gemm(
                     p, wmap, xmap, block ? &smap : nullptr, grouped::gemm_config_for_block_n(64),
                     grouped::Epilogue::kRoutingWeight, {DType::kE4M3, DType::kBF16, scaling},
                     num_sms, nullptr),
                 Error);
  }
  EXPECT_FALSE(grouped::is_supported_block_n(256, grouped::Scaling::kBlock));
}

// y's blocked layout maps each row's 256-wide block to one contiguous run of 256 elements and
// permutes its 16-byte pieces: every element of [blocks][rows][256] exactly once, and a unit's
// rows (row0 .. row0 + 127 of one block) one contiguous range. Host only.
TEST(GroupedFp8Gemm, YBlockOffsetIsAPermutation) {
  const int rows = 37, n = 520;  // a partial last block (8 features of 256)
  const int blocks = (n + 255) / 256;
  std::vector<int> seen(size_t(blocks) * rows * 256, 0);
  for (int r = 0; r < rows; ++r) {
    for (int b = 0; b < blocks; ++b) {
      for (int c = b * 256; c < b * 256 + 256; c += 8) {
        const int64_t o = grouped::y_block_offset(r, c, rows);
        ASSERT_EQ(o % 8, 0);
        ASSERT_GE(o, (int64_t(b) * rows + r) * 256);  // inside row r's run of block b
        ASSERT_LT(o, (int64_t(b) * rows + r + 1) * 256);
        for (int i = 0; i < 8; ++i) ++seen[o + i];
      }
    }
  }
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << i;
}

TEST(GroupedFp8Gemm, BlockScaledEveryTileWidthAgainstFloat64) {
  MOE_REQUIRE_HOPPER();
  check_every_tile_width(200, grouped::Scaling::kBlock);  // two weight tiles, the second partial
  check_every_tile_width(330, grouped::Scaling::kBlock);  // three, the third partial
}

// The per-tensor tiles, tokens on N and (without promotion) on M.
TEST(GroupedFp8Gemm, PerTensorEveryTileWidthAgainstFloat64) {
  MOE_REQUIRE_HOPPER();
  check_every_tile_width(200, grouped::Scaling::kPerTensor);
  check_every_tile_width(330, grouped::Scaling::kPerTensor);
}

// FC1 quantizing its own output (e4m3 + 1x128 scales) gives, bit for bit, what FC1's bf16 output
// through quant::launch_fp8_quantize_1x128 gives: SwiGLU and SwiGLU-OAI with biases, a partial
// last group (I = 200: 72 features) and an odd count of weight tiles (I = 192: the last group
// from one tile), a partial K block; the 128- and (where compiled) 192-token tokens-on-M tiles
// and the tokens-on-N tiles up to kMaxQuantOnNBlockN tokens, an expert over more than one tile
// of each; on every SM and on 3 CTAs (several units a CTA: the epilogue's shared memory and
// barriers reused).
TEST(GroupedFp8Gemm, FusedIntermediateQuantizationIsBitExact) {
  MOE_REQUIRE_HOPPER();
  const int g = 5, k = 336;
  const std::vector<int> counts = {3, 0, 150, 41, 230};
  std::vector<int32_t> offsets(g + 1, 0);
  for (int e = 0; e < g; ++e) offsets[e + 1] = offsets[e] + counts[e];
  const int rows = offsets[g];
  const int64_t ld = quant::fp8_scale_ld(rows);
  const int kb = (k + 127) / 128;
  auto code = [](uint64_t seed, int64_t i) {
    const uint8_t c = static_cast<uint8_t>(uniform_at(seed, i) * 256.0f);
    return static_cast<uint8_t>((c & 0x80) | std::min<uint8_t>(c & 0x7F, 0x50));
  };
  std::vector<uint8_t> x(size_t(rows) * k);
  for (size_t i = 0; i < x.size(); ++i) x[i] = code(12, i);
  std::vector<float> xs(size_t(kb) * ld, 1.0f);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = 0.5f + 1.5f * uniform_at(13, i);
  Tensor xd = to_device(TensorView(x.data(), DType::kE4M3, {rows, k}));
  Tensor xsd = to_device(TensorView(xs.data(), DType::kF32, {kb, ld}));
  Tensor offd = to_device(TensorView(offsets.data(), DType::kI32, {g + 1}));
  const int num_sms = DeviceInfo::detect().num_sms;
  for (int block_n : {8, 16, 32, 64, 128, 192}) {
    if (!grouped::is_supported_block_n(block_n, grouped::Scaling::kBlock)) continue;
    const bool on_m = grouped::is_tokens_on_m_block_n(block_n);
    if (!on_m && block_n > grouped::kMaxQuantOnNBlockN) continue;
    const CUtensorMap xmap = grouped::make_rows_map(xd.data(), DType::kE4M3, rows, k, block_n);
    const CUtensorMap smap =
        grouped::make_scales_map(xsd.data_as<float>(), kb, ld, grouped::scale_box_rows(block_n));
    const grouped::GemmConfig config{block_n, grouped::stages_for(block_n, on_m), on_m};
    for (int inter : {200, 192}) {
      for (grouped::Epilogue epi : {grouped::Epilogue::kSwiGLU, grouped::Epilogue::kSwiGLUOAI}) {
        SCOPED_TRACE("block_n " + std::to_string(block_n) + (on_m ? " (tokens on M)" : "") +
                     ", I " + std::to_string(inter) +
                     (epi == grouped::Epilogue::kSwiGLU ? ", SwiGLU" : ", SwiGLU-OAI"));
        const int n = 2 * inter, mt = (n + 127) / 128, groups = (inter + 127) / 128;
        std::vector<uint8_t> w(size_t(g) * n * k);
        for (size_t i = 0; i < w.size(); ++i) w[i] = code(10 + inter, i);
        // Scales small enough that the activations stay in SwiGLU-OAI's unclamped range too.
        std::vector<float> ws(size_t(g) * mt * 2 * kb), bias(size_t(g) * n);
        for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.002f + 0.004f * uniform_at(11, i);
        for (size_t i = 0; i < bias.size(); ++i) bias[i] = uniform_at(14, i) - 0.5f;
        Tensor wd = to_device(TensorView(w.data(), DType::kE4M3, {g, n, k}));
        Tensor wsd = to_device(TensorView(ws.data(), DType::kF32, {int64_t(ws.size())}));
        Tensor bd = to_device(TensorView(bias.data(), DType::kF32, {g, n}));
        const CUtensorMap wmap = grouped::make_weight_map(wd.data(), DType::kE4M3, g, n, k);
        grouped::GroupedGemmParams p;
        p.num_experts = g;
        p.n = n;
        p.k = k;
        p.expert_offsets = offd.data_as<int32_t>();
        p.w_scales = wsd.data_as<float>();
        p.bias = bd.data_as<float>();
        // Unfused: bf16 h, then the 1x128 quantization kernel.
        Tensor h = Tensor::empty({rows, inter}, DType::kBF16, Device::cuda(0));
        Tensor want_q = Tensor::empty({rows, inter}, DType::kE4M3, Device::cuda(0));
        Tensor want_s = Tensor::empty({groups, ld}, DType::kF32, Device::cuda(0));
        Tensor got_q = Tensor::empty({rows, inter}, DType::kE4M3, Device::cuda(0));
        Tensor got_s = Tensor::empty({groups, ld}, DType::kF32, Device::cuda(0));
        for (const Tensor* t : {&h, &want_q, &want_s, &got_q, &got_s}) poison_device(*t);
        p.out = h.data();
        grouped::launch_grouped_gemm(p, wmap, xmap, &smap, config, epi,
                                     {DType::kE4M3, DType::kBF16, grouped::Scaling::kBlock},
                                     num_sms, nullptr);
        quant::Fp8Quantize1x128Params q;
        q.x = h.data();
        q.rows = rows;
        q.cols = inter;
        q.x_ld = inter;
        q.q = want_q.data_as<uint8_t>();
        q.q_ld = inter;
        q.scales_gemm = want_s.data_as<float>();
        q.scales_gemm_ld = ld;
        q.pad_scales_gemm = false;
        quant::launch_fp8_quantize_1x128(q, nullptr);
        const Tensor hq = to_host(want_q), hs = to_host(want_s);
        // The activations are not all tiny or clamped: the codes use the range.
        int big = 0;
        for (size_t i = 0; i < hq.nbytes(); ++i) big += (hq.data_as<uint8_t>()[i] & 0x7F) >= 0x70;
        EXPECT_GT(big, rows);
        // Fused, on every SM and on 3 CTAs.
        for (int grid : {num_sms, 3}) {
          SCOPED_TRACE("grid " + std::to_string(grid));
          poison_device(got_q);
          poison_device(got_s);
          p.out = got_q.data();
          p.out_scales = got_s.data_as<float>();
          p.out_scales_ld = ld;
          grouped::launch_grouped_gemm(p, wmap, xmap, &smap, config, epi,
                                       {DType::kE4M3, DType::kE4M3, grouped::Scaling::kBlock}, grid,
                                       nullptr);
          MOE_CUDA_CHECK(cudaDeviceSynchronize());
          const Tensor gq = to_host(got_q), gs = to_host(got_s);
          EXPECT_EQ(std::memcmp(gq.data(), hq.data(), hq.nbytes()), 0) << "e4m3 codes differ";
          int scale_mismatches = 0;
          for (int gr = 0; gr < groups; ++gr) {
            for (int r = 0; r < rows; ++r) {
              const float a = hs.data_as<float>()[gr * ld + r];
              const float b = gs.data_as<float>()[gr * ld + r];
              scale_mismatches += std::memcmp(&a, &b, 4) != 0;
            }
          }
          EXPECT_EQ(scale_mismatches, 0);
        }
      }
    }
  }
}

}  // namespace
}  // namespace moe
