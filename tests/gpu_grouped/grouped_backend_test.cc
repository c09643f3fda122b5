// The grouped backend on the GPU against the reference backend (the CPU oracle), on fresh
// random inputs with the output poisoned first: every preset family scaled down, edge
// shapes, CUDA-graph capture and replay, determinism; and the grouped GEMM alone against a
// float64 product.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "backends/grouped/grouped_backend.h"
#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/moe_kernels.h"
#include "backends/grouped/tma_map.h"
#include "backends/reference/reference_backend.h"
#include "common/gpu_test_util.h"
#include "common/test_util.h"
#include "core/compare.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "gpu_grouped/grouped_test_util.h"
#include "moe/moe.h"
#include "quant/formats.h"
#include "quant/tolerance.h"
#include "routing/routing.h"

namespace moe {
namespace {

using testing::expect_matches_reference;
using testing::poison_device;
using testing::random_routing;
using testing::random_x;
using testing::Routed;
using testing::run_backend;
using testing::scaled;
using testing::to_device;
using testing::to_host;

class GroupedFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(GroupedFamily, MatchesReference) {
  MOE_REQUIRE_HOPPER();
  const MoeConfig c = scaled(GetParam());
  for (int64_t t : {1, 5, 64, 200}) expect_matches_reference(c, t, 1000 + t);
}

INSTANTIATE_TEST_SUITE_P(Presets, GroupedFamily, ::testing::ValuesIn(preset_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) ch = std::isalnum(ch) ? ch : '_';
                           return n;
                         });

TEST(Grouped, EdgeShapes) {
  MOE_REQUIRE_HOPPER();
  MoeConfig c = scaled("qwen3-30b-a3b");
  expect_matches_reference(c, 131, 5, /*hot=*/3);  // every token on expert 3
  c.num_experts = 6;  // E not a multiple of 8, experts with zero tokens at T=1
  c.top_k = 2;
  expect_matches_reference(c, 1, 6);
  expect_matches_reference(c, 13, 7);
  // Sizes that are not multiples of the 128-row tile or the 64-wide K block.
  MoeConfig odd = scaled("mixtral-8x7b", 200, 72);
  expect_matches_reference(odd, 37, 8);
  MoeConfig fp16 = scaled("mixtral-8x7b");
  fp16.quant = QuantMode::kFP16;
  fp16.act_dtype = DType::kF16;
  expect_matches_reference(fp16, 20, 9);
}

// An odd number of 128-row weight tiles in both GEMMs (FC1 n = 2 x 160 = 320, FC2 n = 384:
// three each) with hundreds of rows per expert: the 2-CTA cluster variant's last pair has no
// second weight tile (ctest gpu_grouped_cluster2 runs this with MOE_GROUPED_CLUSTER=2).
TEST(Grouped, OddWeightTileCounts) {
  MOE_REQUIRE_HOPPER();
  MoeConfig c = scaled("mixtral-8x7b", 384, 160);
  expect_matches_reference(c, 512, 21);
  expect_matches_reference(c, 3, 22);
}

TEST(Grouped, LargeTokenCountsUseTheLargeTiles) {
  MOE_REQUIRE_HOPPER();
  MoeConfig c = scaled("mixtral-8x7b", 512, 256);
  c.max_num_tokens = 2048;
  expect_matches_reference(c, 2048, 11);
}

// Prefill-sized: 1500 tokens x top-8 = 12,000 pairs take the multi-block plan.
TEST(Grouped, PrefillTakesTheMultiBlockPlan) {
  MOE_REQUIRE_HOPPER();
  MoeConfig c = scaled("qwen3-30b-a3b");
  c.max_num_tokens = 1500;
  ASSERT_GT(1500 * c.top_k, grouped::kPlanOneBlockPairs);
  expect_matches_reference(c, 1500, 12);
}

// The plan alone, one block and multi-block, against the CPU: offsets are the scan of the
// counts per group, every routed pair owns one row of its expert's range (a permutation per
// expert) holding its token and weight, pairs of other ranks' experts get -1, and the shared
// group's rows are every token in order.
TEST(GroupedPlan, OneBlockAndMultiBlockMatchTheCpu) {
  MOE_REQUIRE_HOPPER();
  const int k = 8, begin = 32, num_experts = 256;
  // 64 local experts: 16 lanes sum each one's block counts; 200: 4 lanes, 224 threads idle.
  // 20,000 tokens: 1,250 pairs a block of the multi-block plan, more than its 1,024 threads.
  for (const auto& [local, tokens] :
       std::vector<std::pair<int, int>>{{64, 300}, {64, 5000}, {200, 5000}, {200, 20000}}) {
    const int pairs = tokens * k;
    std::vector<int32_t> ids(pairs);
    std::vector<float> weights(pairs);
    for (int i = 0; i < pairs; ++i) {
      // Skewed: a third of the pairs on expert begin + 5, the rest anywhere (other ranks too).
      ids[i] =
          uniform_at(40, i) < 0.33f ? begin + 5 : static_cast<int>(uniform_at(41, i) * num_experts);
      weights[i] = uniform_at(42, i);
    }
    std::vector<int32_t> want_offsets(local + 2, 0);
    for (int i = 0; i < pairs; ++i) {
      const int e = ids[i] - begin;
      if (e >= 0 && e < local) ++want_offsets[e + 1];
    }
    want_offsets[local + 1] = tokens;  // one shared group
    for (int g = 0; g <= local; ++g) want_offsets[g + 1] += want_offsets[g];
    const int rows = want_offsets[local + 1];
    for (bool multi : {false, true}) {
      Tensor idd = to_device(TensorView(ids.data(), DType::kI32, {pairs}));
      Tensor wd = to_device(TensorView(weights.data(), DType::kF32, {pairs}));
      Tensor offsets = Tensor::empty({local + 2}, DType::kI32, Device::cuda(0));
      Tensor row_token = Tensor::empty({rows}, DType::kI32, Device::cuda(0));
      Tensor row_weight = Tensor::empty({rows}, DType::kF32, Device::cuda(0));
      Tensor pair_row = Tensor::empty({pairs}, DType::kI32, Device::cuda(0));
      Tensor scratch = Tensor::empty({grouped::kPlanScratchInts}, DType::kI32, Device::cuda(0));
      for (Tensor* t : {&offsets, &row_token, &row_weight, &pair_row}) poison_device(*t);
      grouped::PlanParams p;
      p.topk_ids = idd.data_as<const int32_t>();
      p.topk_weights = wd.data_as<const float>();
      p.num_tokens = tokens;
      p.top_k = k;
      p.expert_begin = begin;
      p.num_local_experts = local;
      p.num_shared_groups = 1;
      p.with_shared = true;
      p.expert_offsets = offsets.data_as<int32_t>();
      p.row_token = row_token.data_as<int32_t>();
      p.row_weight = row_weight.data_as<float>();
      p.pair_row = pair_row.data_as<int32_t>();
      p.block_counts = multi ? scratch.data_as<int32_t>() : nullptr;
      grouped::launch_plan(p, nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());
      const std::string where = std::to_string(local) + " experts, " + std::to_string(tokens) +
                                (multi ? " tokens, multi-block" : " tokens, one block");
      const Tensor off_h = to_host(offsets), tok_h = to_host(row_token), w_h = to_host(row_weight),
                   pr_h = to_host(pair_row);
      for (int g = 0; g <= local + 1; ++g) {
        ASSERT_EQ(off_h.data_as<int32_t>()[g], want_offsets[g]) << where << ", offset " << g;
      }
      std::vector<int> seen(rows, 0);
      for (int i = 0; i < pairs; ++i) {
        const int e = ids[i] - begin, row = pr_h.data_as<int32_t>()[i];
        if (e < 0 || e >= local) {
          EXPECT_EQ(row, -1) << where << ", pair " << i;
          continue;
        }
        ASSERT_GE(row, want_offsets[e]) << where << ", pair " << i;
        ASSERT_LT(row, want_offsets[e + 1]) << where << ", pair " << i;
        ++seen[row];
        EXPECT_EQ(tok_h.data_as<int32_t>()[row], i / k) << where << ", row " << row;
        EXPECT_EQ(w_h.data_as<float>()[row], weights[i]) << where << ", row " << row;
      }
      for (int t = 0; t < tokens; ++t) {
        const int row = want_offsets[local] + t;
        ++seen[row];
        EXPECT_EQ(tok_h.data_as<int32_t>()[row], t) << where << ", shared row " << row;
        EXPECT_EQ(w_h.data_as<float>()[row], 1.0f) << where << ", shared row " << row;
      }
      for (int r = 0; r < rows; ++r) ASSERT_EQ(seen[r], 1) << where << ", row " << r;
    }
  }
}

TEST(Grouped, DeterministicBits) {
  MOE_REQUIRE_HOPPER();
  const MoeConfig c = scaled("deepseek-v3");
  auto w = make_random_weights(c, 3);
  const Tensor x = random_x(c, 77, 3);
  const Routed r = random_routing(c, 77, 3);
  const Tensor a = run_backend(grouped_backend_entry(), c, *w, x, r, true, true);
  const Tensor b = run_backend(grouped_backend_entry(), c, *w, x, r, true, true);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
}

// The whole layer (router on the device included) captured in a CUDA graph and replayed on
// new inputs written into the same buffers.
TEST(Grouped, LayerCapturedInACudaGraph) {
  MOE_REQUIRE_HOPPER();
  testing::expect_graph_replay_matches_reference(scaled("qwen3-30b-a3b"), 48, 4, {21, 22, 23});
}

// The GEMM alone: D = W_e X_e^T for every compiled tile width, FC2 epilogue, with or without
// routing weights; n = 196 is not a multiple of 8 (rows of 392 bytes: the epilogue's
// 16-byte copy-out falls back to 2-byte stores).
void check_every_tile_width(int n, bool weighted) {
  const int g = 5, k = 320;
  const std::vector<int> counts = {3, 0, 70, 1, 300};
  std::vector<int32_t> offsets(g + 1, 0);
  for (int e = 0; e < g; ++e) offsets[e + 1] = offsets[e] + counts[e];
  const int rows = offsets[g];
  Tensor w = Tensor::empty({g, n, k}, DType::kBF16), x = Tensor::empty({rows, k}, DType::kBF16);
  fill_normal(w, 1, 0.1f);
  fill_normal(x, 2);
  Tensor rw = Tensor::empty({rows}, DType::kF32);
  for (int i = 0; i < rows; ++i) rw.data_as<float>()[i] = weighted ? 0.5f + uniform_at(3, i) : 1;
  std::vector<double> want(static_cast<size_t>(rows) * n);
  for (int e = 0; e < g; ++e) {
    for (int r = offsets[e]; r < offsets[e + 1]; ++r) {
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int q = 0; q < k; ++q) {
          s += static_cast<double>(
                   fmt::bf16_to_float(w.data_as<uint16_t>()[(int64_t(e) * n + j) * k + q])) *
               fmt::bf16_to_float(x.data_as<uint16_t>()[int64_t(r) * k + q]);
        }
        want[int64_t(r) * n + j] = s * rw.data_as<float>()[r];
      }
    }
  }
  Tensor wd = to_device(w), xd = to_device(x), rwd = to_device(rw);
  Tensor offd = to_device(TensorView(offsets.data(), DType::kI32, {g + 1}));
  Tensor out = Tensor::empty({rows, n}, DType::kBF16, Device::cuda(0));
  const CUtensorMap wmap = grouped::make_weight_map(wd.data(), DType::kBF16, g, n, k);
  const int num_sms = DeviceInfo::detect().num_sms;
  for (int block_n : {8, 16, 32, 64, 128, 256}) {
    if (!grouped::is_supported_block_n(block_n)) continue;
    const CUtensorMap xmap = grouped::make_rows_map(xd.data(), DType::kBF16, rows, k, block_n);
    poison_device(out);
    grouped::GroupedGemmParams p;
    p.num_experts = g;
    p.n = n;
    p.k = k;
    p.expert_offsets = offd.data_as<int32_t>();
    p.out = out.data();
    p.row_weights = weighted ? rwd.data_as<float>() : nullptr;
    grouped::launch_grouped_gemm(p, wmap, xmap, grouped::gemm_config_for_block_n(block_n),
                                 grouped::Epilogue::kRoutingWeight, DType::kBF16, num_sms, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<double> got = to_doubles(to_host(out));
    EXPECT_LE(relative_l2(got, want), 5e-3)
        << "block_n " << block_n << ", n " << n << (weighted ? ", weighted" : ", no weights");
  }
}

TEST(GroupedGemm, EveryTileWidthAgainstFloat64) {
  MOE_REQUIRE_HOPPER();
  check_every_tile_width(192, true);
}

TEST(GroupedGemm, RaggedFeatureCountAndNoRoutingWeights) {
  MOE_REQUIRE_HOPPER();
  check_every_tile_width(196, true);
  check_every_tile_width(192, false);
}

// Decode's FC1 derives its offsets from the router's pairs (GroupedGemmParams::
// offsets_from_pairs): routed groups of an expert-parallel rank (pairs of other ranks
// ignored), then a shared group of every token. The same bits as with the plan's offsets.
TEST(GroupedGemm, OffsetsFromTheRoutersPairsEqualThePlans) {
  MOE_REQUIRE_HOPPER();
  const int routed = 4, g = routed + 1, n = 192, k = 320, top_k = 4;
  const int begin = 7;  // this rank's first expert
  const std::vector<int> counts = {3, 0, 70, 1};
  Tensor w = Tensor::empty({g, n, k}, DType::kBF16);
  fill_normal(w, 1, 0.1f);
  const Tensor wd = to_device(w);
  const CUtensorMap wmap = grouped::make_weight_map(wd.data(), DType::kBF16, g, n, k);
  const int num_sms = DeviceInfo::detect().num_sms;
  for (const int tokens : {40, 200}) {
    std::vector<int32_t> ids;
    for (int e = 0; e < routed; ++e) ids.insert(ids.end(), counts[e], begin + e);
    for (int i = 0; static_cast<int>(ids.size()) < tokens * top_k; ++i) {
      ids.push_back(i % 2 == 0 ? i % begin : begin + routed + i % 9);  // other ranks' experts
    }
    for (int i = static_cast<int>(ids.size()) - 1; i > 0; --i) {  // shuffled
      std::swap(ids[i], ids[static_cast<int>(uniform_at(5, i) * (i + 1)) % (i + 1)]);
    }
    std::vector<int32_t> offsets(g + 1, 0);
    for (int e = 0; e < routed; ++e) offsets[e + 1] = offsets[e] + counts[e];
    offsets[g] = offsets[routed] + tokens;
    const int rows = offsets[g];
    Tensor x = Tensor::empty({rows, k}, DType::kBF16);
    fill_normal(x, 2);
    const Tensor xd = to_device(x);
    Tensor offd = to_device(TensorView(offsets.data(), DType::kI32, {g + 1}));
    Tensor idsd = to_device(TensorView(ids.data(), DType::kI32, {tokens * top_k}));
    Tensor out = Tensor::empty({rows, n}, DType::kBF16, Device::cuda(0));
    for (int block_n : {8, 16, 32, 64}) {
      if (!grouped::is_supported_block_n(block_n)) continue;
      const CUtensorMap xmap = grouped::make_rows_map(xd.data(), DType::kBF16, rows, k, block_n);
      std::vector<Tensor> got;
      for (bool from_pairs : {false, true}) {
        poison_device(out);
        grouped::GroupedGemmParams p;
        p.num_experts = g;
        p.n = n;
        p.k = k;
        // From the pairs: expert_offsets points at the router's ids instead.
        p.expert_offsets = from_pairs ? idsd.data_as<const int32_t>() : offd.data_as<int32_t>();
        p.out = out.data();
        p.offsets_before_wait = true;
        p.offsets_from_pairs = from_pairs;
        p.top_k = top_k;
        p.num_tokens = tokens;
        p.expert_begin = begin;
        p.shared_groups = 1;
        grouped::launch_grouped_gemm(p, wmap, xmap, grouped::gemm_config_for_block_n(block_n),
                                     grouped::Epilogue::kRoutingWeight, DType::kBF16, num_sms,
                                     nullptr);
        MOE_CUDA_CHECK(cudaDeviceSynchronize());
        got.push_back(to_host(out));
      }
      EXPECT_EQ(std::memcmp(got[0].data(), got[1].data(), got[0].nbytes()), 0)
          << tokens << " tokens, block_n " << block_n;
      const std::vector<double> v = to_doubles(got[1]);
      EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](double d) { return std::isfinite(d); }))
          << tokens << " tokens, block_n " << block_n << ": rows left unwritten";
    }
  }
}

}  // namespace
}  // namespace moe
