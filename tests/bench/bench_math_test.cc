// The pure parts of `moe bench` (bench/harness/bench_math.h), on the CPU: bytes, FLOPs and
// floor of a case against hand-computed values for real presets, distinct-expert counting
// on routings from the CPU oracle, statistics, the geometric mean, the number of input sets,
// option parsing, and the JSON row and table formats.
#include "bench/harness/bench_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "core/random.h"
#include "moe/errors.h"
#include "moe/moe.h"
#include "routing/routing.h"

namespace moe::bench {
namespace {

// ---- Work of a case ------------------------------------------------------------------------

TEST(BenchMath, BytesAndFlopsOfQwen3AtOneToken) {
  const MoeConfig c = preset("qwen3-30b-a3b");  // E 128, k 8, H 2048, I 768, no shared
  // 8 experts x 3 x 2048 x 768 x 2 bytes + x and out (2 x 1 x 2048 x 2 bytes).
  EXPECT_DOUBLE_EQ(case_bytes(c, 1, 8), 8.0 * 3 * 2048 * 768 * 2 + 2.0 * 2048 * 2);
  EXPECT_DOUBLE_EQ(case_bytes(c, 1, 8), 75505664.0);
  EXPECT_DOUBLE_EQ(case_flops(c, 1), 2.0 * 8 * 3 * 2048 * 768);
  EXPECT_DOUBLE_EQ(case_flops(c, 4096), 4096 * case_flops(c, 1));
}

TEST(BenchMath, SharedMlpCountsOnceInBytesAndPerTokenInFlops) {
  const MoeConfig c = preset("deepseek-v3");  // H 7168, I 2048, k 8, shared 2048
  const double h = 7168, i = 2048, is = 2048;
  EXPECT_DOUBLE_EQ(case_bytes(c, 64, 100), 100 * 3 * h * i * 2 + 3 * h * is * 2 + 2 * 64 * h * 2);
  EXPECT_DOUBLE_EQ(case_flops(c, 64), 2 * 64 * 8 * 3 * h * i + 2 * 64 * 3 * h * is);
  // Fractional distinct counts (a mean over input sets) interpolate.
  EXPECT_DOUBLE_EQ(case_bytes(c, 64, 100.5) - case_bytes(c, 64, 100), 0.5 * 3 * h * i * 2);
}

TEST(BenchMath, WeightBytesPerElementFollowTheFormat) {
  EXPECT_DOUBLE_EQ(weight_bytes_per_element(QuantMode::kBF16), 2.0);
  EXPECT_DOUBLE_EQ(weight_bytes_per_element(QuantMode::kFP16), 2.0);
  EXPECT_DOUBLE_EQ(weight_bytes_per_element(QuantMode::kFP8PerTensor), 1.0);
  EXPECT_DOUBLE_EQ(weight_bytes_per_element(QuantMode::kFP8Block), 1.0 + 4.0 / 16384);
  EXPECT_DOUBLE_EQ(weight_bytes_per_element(QuantMode::kNVFP4), 0.5625);
  EXPECT_DOUBLE_EQ(weight_bytes_per_element(QuantMode::kMXFP4), 0.53125);
  MoeConfig c = preset("mixtral-8x7b");
  c.quant = QuantMode::kFP8PerTensor;
  EXPECT_DOUBLE_EQ(case_bytes(c, 1, 2), 2.0 * 3 * 4096 * 14336 + 2.0 * 4096 * 2);
}

TEST(BenchMath, ModelWeightBytesOfTheLargePresets) {
  // DeepSeek-V3 bf16: 256 x 3 x 7168 x 2048 x 2 + shared + router ~ 22.6 GB.
  const double ds = model_weight_bytes(preset("deepseek-v3"));
  EXPECT_NEAR(ds / 1e9, 22.6, 0.1);
  EXPECT_NEAR(model_weight_bytes(preset("kimi-k2")) / 1e9, 33.9, 0.1);
  EXPECT_NEAR(model_weight_bytes(preset("llama4-maverick")) / 1e9, 32.5, 0.1);
  // GPT-OSS carries f32 expert biases.
  const MoeConfig g = preset("gpt-oss-20b");
  EXPECT_DOUBLE_EQ(model_weight_bytes(g),
                   32.0 * 3 * 2880 * 2880 * 2 + 32.0 * (2 * 2880 + 2880) * 4 + 32.0 * 2880 * 4);
}

TEST(BenchMath, FloorIsTheSlowerOfMemoryAndCompute) {
  const Roofline r{2.0e12, 500e12};
  const Floor mem = case_floor(4e9, 1e11, r);  // 2 ms of memory, 0.2 ms of compute
  EXPECT_DOUBLE_EQ(mem.memory_s, 2e-3);
  EXPECT_DOUBLE_EQ(mem.compute_s, 2e-4);
  EXPECT_TRUE(mem.memory_bound());
  EXPECT_DOUBLE_EQ(mem.seconds(), 2e-3);
  const Floor cmp = case_floor(1e9, 5e15, r);
  EXPECT_FALSE(cmp.memory_bound());
  EXPECT_DOUBLE_EQ(cmp.seconds(), 10.0);
  EXPECT_THROW(case_floor(1, 1, Roofline{0, 1}), Error);
}

// ---- Distinct experts ------------------------------------------------------------------------

TEST(BenchMath, CountsTokensPerExpertAndDistinctExperts) {
  const std::vector<int32_t> ids = {3, 1, 3, 0, 3, 1};
  const std::vector<int> counts = tokens_per_expert(ids, 5);
  EXPECT_EQ(counts, (std::vector<int>{1, 2, 0, 3, 0}));
  EXPECT_EQ(count_distinct_experts(ids, 5), 3);
  EXPECT_EQ(count_active(counts), 3);
  EXPECT_EQ(count_distinct_experts({}, 4), 0);
  const std::vector<int32_t> bad = {0, 5};
  EXPECT_THROW(tokens_per_expert(bad, 5), Error);
  const std::vector<int32_t> negative = {-1};
  EXPECT_THROW(tokens_per_expert(negative, 5), Error);
}

// Against a set built directly from the CPU oracle's ids, for real routing methods.
TEST(BenchMath, DistinctExpertsOfOracleRoutingsMatchASet) {
  for (const char* name : {"qwen3-30b-a3b", "deepseek-v3", "llama4-maverick", "gpt-oss-20b"}) {
    const MoeConfig c = preset(name);
    for (int64_t t : {1, 7, 64}) {
      Tensor logits = Tensor::empty({t, c.num_experts}, DType::kF32);
      fill_normal(logits, stream_id(11, t));
      Tensor bias;
      if (c.routing.has_correction_bias) {
        bias = Tensor::empty({c.num_experts}, DType::kF32);
        fill_normal(bias, stream_id(12, t), 0.1f);
      }
      Tensor ids = Tensor::empty({t, c.top_k}, DType::kI32);
      Tensor w = Tensor::empty({t, c.top_k}, DType::kF32);
      route_cpu(c.routing, c.top_k, logits, bias.defined() ? bias.view() : TensorView(), ids, w);
      const std::span<const int32_t> span(ids.data_as<const int32_t>(), ids.numel());
      const std::set<int32_t> distinct(span.begin(), span.end());
      EXPECT_EQ(count_distinct_experts(span, c.num_experts), static_cast<int>(distinct.size()))
          << name << " T=" << t;
      const std::vector<int> counts = tokens_per_expert(span, c.num_experts);
      int64_t total = 0;
      for (int n : counts) total += n;
      EXPECT_EQ(total, t * c.top_k) << name;
      if (t == 1) {
        EXPECT_EQ(static_cast<int>(distinct.size()), c.top_k) << name;
      }
    }
  }
}

// ---- Statistics --------------------------------------------------------------------------------

TEST(BenchMath, TimingStatisticsOfKnownSamples) {
  const TimingStats odd = summarize_times({5, 1, 3, 2, 4});
  EXPECT_EQ(odd.count, 5);
  EXPECT_DOUBLE_EQ(odd.median_ms, 3);
  EXPECT_DOUBLE_EQ(odd.mean_ms, 3);
  EXPECT_DOUBLE_EQ(odd.min_ms, 1);
  EXPECT_DOUBLE_EQ(odd.max_ms, 5);
  EXPECT_DOUBLE_EQ(odd.p10_ms, 1.4);  // rank 0.4 between 1 and 2
  EXPECT_DOUBLE_EQ(odd.p90_ms, 4.6);
  EXPECT_DOUBLE_EQ(odd.spread(), (4.6 - 1.4) / 3);
  EXPECT_DOUBLE_EQ(summarize_times({4, 1, 3, 2}).median_ms, 2.5);
  EXPECT_DOUBLE_EQ(summarize_times({7}).p90_ms, 7);
  EXPECT_THROW(summarize_times({}), Error);
  EXPECT_THROW(summarize_times({1, NAN}), Error);
  EXPECT_THROW(summarize_times({1, -1}), Error);
}

TEST(BenchMath, GeometricMean) {
  const std::vector<double> v = {1, 4, 16};
  EXPECT_NEAR(geometric_mean(v), 4, 1e-12);
  const std::vector<double> one = {1.37};
  EXPECT_NEAR(geometric_mean(one), 1.37, 1e-12);
  const std::vector<double> zero = {1, 0};
  EXPECT_THROW(geometric_mean(zero), Error);
  EXPECT_THROW(geometric_mean({}), Error);
}

TEST(BenchMath, InputSetsExceedTwiceL2UnlessCapped) {
  const size_t l2 = 50u << 20;
  // 72 MiB sets: two of them (144 MiB) exceed 100 MiB.
  EXPECT_EQ(num_input_sets(72u << 20, l2, 55), 2);
  // 10 MiB sets: 11 exceed 100 MiB, 10 do not.
  EXPECT_EQ(num_input_sets(10u << 20, l2, 55), 11);
  // Exactly 2 x L2 in 4 sets is not more than it: 5.
  EXPECT_EQ(num_input_sets(25u << 20, l2, 55), 5);
  // Tiny sets: capped by the number of launches.
  EXPECT_EQ(num_input_sets(4096, l2, 55), 55);
  // Huge sets: still at least 2, but never more than the cap.
  EXPECT_EQ(num_input_sets(size_t{1} << 34, l2, 55), 2);
  EXPECT_EQ(num_input_sets(size_t{1} << 34, l2, 1), 1);
  EXPECT_THROW(num_input_sets(1, l2, 0), Error);
}

// ---- Options -----------------------------------------------------------------------------------

TEST(BenchMath, DefaultTokenGrid) {
  EXPECT_EQ(default_token_counts("mixtral-8x7b"), (std::vector<int64_t>{1, 8, 64, 512, 4096}));
  EXPECT_EQ(default_token_counts("qwen3-30b-a3b"),
            (std::vector<int64_t>{1, 8, 64, 512, 4096, 16384}));
}

TEST(BenchMath, ParsesLists) {
  EXPECT_EQ(split_list(" a, b,,c ,"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(split_list("").empty());
  EXPECT_EQ(parse_token_list("1, 8,64,8"), (std::vector<int64_t>{1, 8, 64}));
  EXPECT_THROW(parse_token_list("1,x"), Error);
  EXPECT_THROW(parse_token_list("0"), Error);
  EXPECT_THROW(parse_token_list("-4"), Error);
  EXPECT_THROW(parse_token_list("12k"), Error);
  EXPECT_THROW(parse_token_list(" , "), Error);
}

TEST(BenchMath, OutputPathNamesTheDeviceAndDate) {
  EXPECT_EQ(sanitize_name("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
  EXPECT_EQ(sanitize_name("  NVIDIA  H200 (MIG 1g.18gb) "), "nvidia-h200-mig-1g-18gb");
  EXPECT_EQ(sanitize_name("///"), "device");
  EXPECT_EQ(utc_date(0), "1970-01-01");
  EXPECT_EQ(utc_date(1767225599), "2025-12-31");
  EXPECT_EQ(utc_timestamp(86400 + 3661), "1970-01-02T01:01:01Z");
  EXPECT_EQ(default_output_path("NVIDIA H100 80GB HBM3", "2026-01-02"),
            "bench/results/nvidia-h100-80gb-hbm3-2026-01-02.json");
}

// ---- Results -----------------------------------------------------------------------------------

CaseResult sample_case(const std::string& model, int64_t t, double ms, double floor_ms) {
  CaseResult c;
  c.model = model;
  c.tokens = t;
  c.ours = summarize_times({ms, ms * 1.1, ms * 0.9});
  c.bytes = 3e12 * floor_ms * 1e-3;  // memory-bound at 3 TB/s
  c.flops = 1e9;
  c.floor = case_floor(c.bytes, c.flops, Roofline{3e12, 1e15});
  c.distinct_experts = 7.5;
  c.input_sets = 4;
  c.inputs_exceed_2x_l2 = true;
  return c;
}

TEST(BenchMath, CaseRatesAndRatios) {
  CaseResult c = sample_case("qwen3-30b-a3b", 8, 0.05, 0.04);
  EXPECT_NEAR(c.time_over_floor(), 1.25, 1e-12);
  EXPECT_NEAR(c.gbps(), c.bytes / 0.05e-3 / 1e9, 1e-9);
  EXPECT_NEAR(c.tflops(), 1e9 / 0.05e-3 / 1e12, 1e-12);
  EXPECT_FALSE(c.peer_over_ours().has_value());
  c.peer = summarize_times({0.1});
  EXPECT_NEAR(*c.peer_over_ours(), 2.0, 1e-12);
}

TEST(BenchMath, JsonRowHasEveryFieldThePlotReads) {
  CaseResult c = sample_case("deepseek-v3", 64, 0.2, 0.1);
  nlohmann::json j = case_to_json(c);
  EXPECT_EQ(j.at("model"), "deepseek-v3");
  EXPECT_EQ(j.at("tokens"), 64);
  EXPECT_DOUBLE_EQ(j.at("ms").get<double>(), 0.2);
  EXPECT_NEAR(j.at("floor_ms").get<double>(), 0.1, 1e-12);
  EXPECT_NEAR(j.at("time_over_floor").get<double>(), 2.0, 1e-9);
  EXPECT_EQ(j.at("floor_bound"), "memory");
  EXPECT_DOUBLE_EQ(j.at("distinct_experts").get<double>(), 7.5);
  EXPECT_EQ(j.at("input_sets"), 4);
  EXPECT_EQ(j.at("timing").at("count"), 3);
  EXPECT_TRUE(j.at("peer_ms").is_null());
  EXPECT_TRUE(j.at("peer_over_ours").is_null());
  c.peer = summarize_times({0.3});
  c.peer_mode = "graph";
  j = case_to_json(c);
  EXPECT_DOUBLE_EQ(j.at("peer_ms").get<double>(), 0.3);
  EXPECT_NEAR(j.at("peer_over_ours").get<double>(), 1.5, 1e-12);
  EXPECT_EQ(j.at("peer_mode"), "graph");
  // Round trip through text keeps the fields.
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);
}

TEST(BenchMath, SummaryAndRunDocument) {
  BenchRun run;
  run.device_name = "NVIDIA H100 80GB HBM3";
  run.roofline.rates = Roofline{3e12, 7e14};
  run.roofline.gemm_n = 8192;
  run.cases.push_back(sample_case("a", 1, 0.11, 0.1));  // 1.1
  run.cases.push_back(sample_case("a", 8, 0.14, 0.1));  // 1.4
  run.cases.push_back(sample_case("b", 1, 0.10, 0.1));  // 1.0
  run.cases[0].peer = summarize_times({0.22});          // 2.0
  run.skipped.push_back({"kimi-k2", "needs 40 GB"});
  const Summary s = summarize_cases(run.cases);
  EXPECT_EQ(s.num_cases, 3);
  EXPECT_NEAR(s.geomean_time_over_floor, std::cbrt(1.1 * 1.4 * 1.0), 1e-9);
  EXPECT_NEAR(s.worst_time_over_floor, 1.4, 1e-9);
  EXPECT_EQ(s.worst_case, "a T=8");
  EXPECT_EQ(s.num_peer_cases, 1);
  EXPECT_NEAR(s.geomean_peer_over_ours, 2.0, 1e-9);
  const nlohmann::json j = run_to_json(run);
  EXPECT_EQ(j.at("device").at("name"), "NVIDIA H100 80GB HBM3");
  EXPECT_NEAR(j.at("roofline").at("copy_gbps").get<double>(), 3000, 1e-9);
  EXPECT_NEAR(j.at("roofline").at("gemm_tflops").get<double>(), 700, 1e-9);
  EXPECT_EQ(j.at("cases").size(), 3u);
  EXPECT_EQ(j.at("summary").at("worst_case"), "a T=8");
  EXPECT_EQ(j.at("skipped").at(0).at("model"), "kimi-k2");
  EXPECT_THROW(summarize_cases({}), Error);
  EXPECT_TRUE(run_to_json(BenchRun{}).at("summary").is_null());
}

TEST(BenchMath, TableRowsAlignUnderTheHeader) {
  const std::string header = table_header();
  CaseResult c = sample_case("qwen3-235b-a22b", 4096, 1.23456, 1.0);
  const std::string no_peer = table_row(c);
  c.peer = summarize_times({2.5});
  const std::string with_peer = table_row(c);
  EXPECT_EQ(no_peer.size(), header.size());
  EXPECT_EQ(with_peer.size(), header.size());
  EXPECT_NE(with_peer.find("1.2346"), std::string::npos);  // ms
  EXPECT_NE(with_peer.find("1.23 "), std::string::npos);   // time/floor
  EXPECT_NE(with_peer.find("2.5000"), std::string::npos);  // peer ms
  EXPECT_NE(with_peer.find("2.03"), std::string::npos);    // peer/ours
  EXPECT_EQ(no_peer.back(), '-');
  // Each column ends where its title ends.
  for (const char* title : {"T", "ms", "TFLOP/s", "GB/s", "floor ms", "time/floor"}) {
    const size_t end = header.find(std::string(" ") + title) + 1 + std::string(title).size();
    EXPECT_NE(with_peer[end - 1], ' ') << title;
    EXPECT_EQ(with_peer[end], ' ') << title;
  }
}

}  // namespace
}  // namespace moe::bench
