// The dense-vs-grouped choice and the dense backend's stacked layout: pure functions,
// checked on the CPU.
#include "backends/dense/dense_choice.h"

#include <gtest/gtest.h>

#include "backends/dense/dense_layout.h"

namespace moe {
namespace {

DenseChoiceProblem problem(int e, int k, int h, int i, int s, int64_t t,
                           QuantMode q = QuantMode::kBF16) {
  DenseChoiceProblem p;
  p.num_experts = e;
  p.top_k = k;
  p.hidden = h;
  p.inter = i;
  p.shared_inter = s;
  p.tokens = t;
  p.quant = q;
  p.num_sms = 132;
  return p;
}

DenseChoiceProblem mixtral(int64_t t) { return problem(8, 2, 4096, 14336, 0, t); }
DenseChoiceProblem deepseek_v3(int64_t t) {
  return problem(256, 8, 7168, 2048, 2048, t, QuantMode::kFP8Block);
}

TEST(DenseChoice, ExpectedActiveExperts) {
  EXPECT_DOUBLE_EQ(expected_active_experts(8, 2, 0), 0.0);
  EXPECT_NEAR(expected_active_experts(8, 2, 1), 2.0, 1e-12);  // one token: its k experts
  EXPECT_NEAR(expected_active_experts(8, 2, 2), 8 * (1 - 0.75 * 0.75), 1e-12);
  EXPECT_NEAR(expected_active_experts(4, 4, 1), 4.0, 1e-12);  // k == E: all of them
  EXPECT_NEAR(expected_active_experts(256, 8, 100000), 256.0, 1e-9);
  double prev = 0;
  for (int64_t t = 1; t <= 512; t *= 2) {
    const double a = expected_active_experts(128, 8, t);
    EXPECT_GT(a, prev) << t;
    EXPECT_LE(a, 128.0);
    prev = a;
  }
}

// One token reads k of E experts on grouped, all E on dense: grouped whenever E/k is large.
TEST(DenseChoice, OneTokenPrefersGrouped) {
  for (const DenseChoiceProblem& p :
       {mixtral(1), deepseek_v3(1), problem(16, 1, 5120, 8192, 8192, 1)}) {
    const DenseChoice c = choose_dense(p);
    EXPECT_FALSE(c.dense) << c.reason;
    EXPECT_LT(c.grouped_us, c.dense_us);
    EXPECT_NEAR(c.active_experts, p.top_k, 1e-9);
  }
}

// The measurement the constants were fitted to (H100, bf16, 1..64 tokens): grouped was faster
// in every case, including Mixtral with all 8 experts active from 16 tokens on.
TEST(DenseChoice, MatchesTheMeasuredCrossovers) {
  struct Model {
    const char* name;
    int e, k, h, i, s;
  };
  const Model models[] = {
      {"mixtral-8x7b", 8, 2, 4096, 14336, 0},        {"mixtral-8x22b", 8, 2, 6144, 16384, 0},
      {"llama4-scout", 16, 1, 5120, 8192, 8192},     {"qwen3-30b-a3b", 128, 8, 2048, 768, 0},
      {"deepseek-v2-lite", 64, 6, 2048, 1408, 2816}, {"gpt-oss-20b", 32, 4, 2880, 2880, 0}};
  for (const Model& m : models) {
    for (int t : {1, 2, 4, 8, 16, 32, 64}) {
      const DenseChoice c = choose_dense(problem(m.e, m.k, m.h, m.i, m.s, t));
      EXPECT_FALSE(c.dense) << m.name << " T=" << t << ": " << c.reason;
    }
  }
  EXPECT_GT(choose_dense(mixtral(16)).active_experts, 7.9);
}

// A small layer with every expert always active: the fixed costs decide, and dense wins.
TEST(DenseChoice, SmallAllActiveLayersPreferDense) {
  const DenseChoice c = choose_dense(problem(4, 4, 2048, 1024, 0, 2));
  EXPECT_TRUE(c.dense) << c.reason;
}

// Every expert always active (k == E) with equal efficiencies: the launch overhead decides.
TEST(DenseChoice, EqualBytesFewerLaunchesWin) {
  DenseCostModel m;
  m.grouped_bw_efficiency = m.dense_bw_efficiency;
  m.grouped_math_efficiency = m.dense_math_efficiency;
  const DenseChoice c = choose_dense(problem(4, 4, 2048, 1024, 0, 2), m);
  EXPECT_TRUE(c.dense) << c.reason;
  m.dense_fixed_us = m.grouped_fixed_us + 1;
  EXPECT_FALSE(choose_dense(problem(4, 4, 2048, 1024, 0, 2), m).dense);
}

// Many tokens: dense does E/k times the FLOPs and loses once compute-bound.
TEST(DenseChoice, ComputeBoundPrefersGrouped) {
  const DenseChoice c = choose_dense(mixtral(4096));
  EXPECT_FALSE(c.dense) << c.reason;
  EXPECT_GT(c.dense_us, 2 * c.grouped_us);
}

// Many small experts (DeepSeek-V3: 256 experts, k = 8): grouped at every token count.
TEST(DenseChoice, ManyExpertsNeverDense) {
  for (int64_t t = 1; t <= 8192; t *= 2) {
    const DenseChoice c = choose_dense(deepseek_v3(t));
    EXPECT_FALSE(c.dense) << c.reason;
  }
}

TEST(DenseChoice, UnsupportedInputsSayWhy) {
  const DenseChoice c = choose_dense(problem(8, 2, 4096, 14336, 0, 16, QuantMode::kNVFP4));
  EXPECT_FALSE(c.dense);
  EXPECT_NE(c.reason.find("nvfp4"), std::string::npos) << c.reason;
  EXPECT_FALSE(choose_dense(mixtral(0)).dense);
  DenseChoiceProblem no_sms = mixtral(16);
  no_sms.num_sms = 0;
  EXPECT_FALSE(choose_dense(no_sms).dense);
}

TEST(DenseChoice, ReasonQuotesBothEstimates) {
  const DenseChoice c = choose_dense(mixtral(16));
  EXPECT_NE(c.reason.find("dense"), std::string::npos);
  EXPECT_NE(c.reason.find("grouped"), std::string::npos);
  EXPECT_NE(c.reason.find("T=16"), std::string::npos) << c.reason;
  // FP8 halves the weight bytes of both: the choice stays, the times drop.
  DenseChoiceProblem fp8 = mixtral(16);
  fp8.quant = QuantMode::kFP8PerTensor;
  const DenseChoice c8 = choose_dense(fp8);
  EXPECT_LT(c8.dense_us, c.dense_us);
  EXPECT_LT(c8.grouped_us, c.grouped_us);
}

TEST(DenseLayout, SegmentsLaidEndToEnd) {
  const dense::DenseDims d{3, 256, 128, 384};
  EXPECT_EQ(d.n1(), 2 * (3 * 128 + 384));
  EXPECT_EQ(d.k2(), 3 * 128 + 384);
  EXPECT_EQ(d.num_segments(), 4);
  EXPECT_EQ(d.gate_row(0), 0);
  EXPECT_EQ(d.gate_row(2), 2 * 2 * 128);
  EXPECT_EQ(d.gate_row(3), 2 * 3 * 128);  // the shared gate follows every expert's [gate|up]
  EXPECT_EQ(d.down_col(3), 3 * 128);
  EXPECT_EQ(d.segment_inter(1), 128);
  EXPECT_EQ(d.segment_inter(3), 384);
}

TEST(DenseLayout, VariantRangesAreContiguous) {
  const dense::DenseDims d{3, 256, 128, 384};
  using dense::Variant;
  const auto all = dense::variant_range(d, Variant::kRoutedAndShared);
  const auto routed = dense::variant_range(d, Variant::kRouted);
  const auto shared = dense::variant_range(d, Variant::kShared);
  EXPECT_EQ(all.n_begin, 0);
  EXPECT_EQ(all.n_end, d.n1());
  EXPECT_EQ(all.k_end, d.k2());
  EXPECT_EQ(routed.n_end, shared.n_begin);
  EXPECT_EQ(routed.k_end, shared.k_begin);
  EXPECT_EQ(routed.k_end, 3 * 128);
  EXPECT_EQ(shared.n_end - shared.n_begin, 2 * 384);
  EXPECT_TRUE(dense::variant_exists(d, Variant::kShared));
  const dense::DenseDims no_shared{8, 256, 128, 0};
  EXPECT_TRUE(dense::variant_exists(no_shared, Variant::kRouted));
  EXPECT_FALSE(dense::variant_exists(no_shared, Variant::kShared));
  EXPECT_FALSE(dense::variant_exists(no_shared, Variant::kRoutedAndShared));
  EXPECT_EQ(dense::round_up(5, 4), 8);
  EXPECT_EQ(dense::round_up(8, 4), 8);
}

TEST(DenseLayout, ChunkTokensBoundTheBuffers) {
  const dense::DenseDims mixtral{8, 4096, 14336, 0};
  EXPECT_EQ(dense::dense_chunk_tokens(mixtral, 8192), 256);  // 292 by the budget, capped
  EXPECT_EQ(dense::dense_chunk_tokens(mixtral, 5), 8);       // what 5 tokens need, padded
  EXPECT_EQ(dense::dense_chunk_tokens(mixtral, 64), 64);
  const dense::DenseDims deepseek{256, 7168, 2048, 2048};
  const int64_t c = dense::dense_chunk_tokens(deepseek, 8192);
  EXPECT_EQ(c, 60);  // 256 MiB / (N1 * 4 bytes) = 63.75, down to a multiple of 4
  EXPECT_LE(c * deepseek.n1() * 4, dense::kFc1ChunkBytes);
  const dense::DenseDims huge{1024, 8192, 8192, 0};
  EXPECT_EQ(dense::dense_chunk_tokens(huge, 8192), 16);  // never below 16
  for (int64_t t = 1; t < 300; ++t) EXPECT_EQ(dense::dense_chunk_tokens(mixtral, t) % 4, 0);
}

}  // namespace
}  // namespace moe
