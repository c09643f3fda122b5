// The pure parts of `moe bench` (bench/harness/bench_math.h), on the CPU: bytes, FLOPs and
// floor of a case against hand-computed values for real presets (bf16, and fp8 with its
// scales and its own GEMM rate), distinct-expert counting on routings from the CPU oracle,
// statistics, the geometric mean, the number of input sets, option parsing, the bf16
// companion rows of --vs-bf16, and the JSON row and table formats.
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
  // 2 experts x (3 e4m3 matrices + one f32 scale each) + x and out in bf16.
  EXPECT_DOUBLE_EQ(case_bytes(c, 1, 2), 2.0 * (3 * 4096 * 14336 + 3 * 4) + 2.0 * 4096 * 2);
}

TEST(BenchMath, WeightMatrixBytesCountTheScalesOfEachFormat) {
  // [rows, K] = [2048, 7168] (DeepSeek-V3's gate_proj): 16 x 56 blocks of 128 x 128.
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kBF16, 2048, 7168), 2.0 * 2048 * 7168);
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kFP16, 2048, 7168), 2.0 * 2048 * 7168);
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kFP8Block, 2048, 7168),
                   2048.0 * 7168 + 16 * 56 * 4);
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kFP8PerTensor, 2048, 7168), 2048.0 * 7168 + 4);
  // Partial blocks count whole: [200, 300] has 2 x 3 blocks.
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kFP8Block, 200, 300), 200.0 * 300 + 6 * 4);
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kFP8Block, 1, 1), 1.0 + 4);
  // 4-bit: half a byte per element, a 1-byte scale per 16 (nvfp4, + f32 global) or 32 along K.
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kNVFP4, 16, 64), 512.0 + 16 * 4 + 4);
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kMXFP4, 16, 64), 512.0 + 16 * 2);
  EXPECT_DOUBLE_EQ(weight_matrix_bytes(QuantMode::kW4A8MXFP4MXFP8, 16, 64), 512.0 + 16 * 2);
  EXPECT_THROW(weight_matrix_bytes(QuantMode::kFP8Block, 0, 128), Error);
  EXPECT_THROW(weight_matrix_bytes(QuantMode::kBF16, 128, -1), Error);
  // Where the sizes are multiples of the blocks, the exact count is the per-element average.
  for (QuantMode q : all_quant_modes()) {
    EXPECT_DOUBLE_EQ(
        weight_matrix_bytes(q, 1024, 4096) / (1024.0 * 4096),
        weight_bytes_per_element(q) +
            (q == QuantMode::kFP8PerTensor || q == QuantMode::kNVFP4 ? 4.0 / (1024.0 * 4096) : 0.0))
        << quant_mode_name(q);
  }
  // An expert MLP: gate [I, H] and up [I, H] (K = H), down [H, I] (K = I).
  EXPECT_DOUBLE_EQ(expert_weight_bytes(QuantMode::kFP8Block, 7168, 2048),
                   3.0 * 7168 * 2048 + 3 * 16 * 56 * 4);
  // H 200, I 300: gate and up [300, 200] have 3 x 2 blocks each, down [200, 300] 2 x 3.
  EXPECT_DOUBLE_EQ(expert_weight_bytes(QuantMode::kFP8Block, 200, 300),
                   3.0 * 200 * 300 + 3 * 6 * 4);
  EXPECT_DOUBLE_EQ(expert_weight_bytes(QuantMode::kBF16, 7168, 2048), 6.0 * 7168 * 2048);
}

TEST(BenchMath, Fp8BlockBytesAndFlopsOfDeepSeekV3) {
  MoeConfig c = preset("deepseek-v3");  // H 7168, I 2048, k 8, shared 2048
  c.quant = QuantMode::kFP8Block;
  c.validate();
  const double h = 7168, i = 2048, is = 2048;
  const double scales = 3 * (i / 128) * (h / 128) * 4;  // f32 per 128x128 block, 3 matrices
  const double expert = 3 * h * i + scales;
  EXPECT_DOUBLE_EQ(expert, 44050944.0);
  // x and out stay bf16: 2 x T x H x 2 bytes.
  EXPECT_DOUBLE_EQ(case_bytes(c, 64, 100), 100 * expert + (3 * h * is + scales) + 2 * 64 * h * 2);
  EXPECT_DOUBLE_EQ(case_bytes(c, 1, 9), 9 * 44050944.0 + 44050944.0 + 2 * h * 2);
  // The work does not depend on the format.
  MoeConfig bf16 = c;
  bf16.quant = QuantMode::kBF16;
  EXPECT_DOUBLE_EQ(case_flops(c, 64), case_flops(bf16, 64));
  EXPECT_DOUBLE_EQ(case_flops(c, 64), 2 * 64 * 8 * 3 * h * i + 2 * 64 * 3 * h * is);
  // Every expert, the shared MLP and the f32 router: about half of bf16's 22.6 GB.
  EXPECT_DOUBLE_EQ(model_weight_bytes(c), 257 * expert + 256 * h * 4);
  EXPECT_NEAR(model_weight_bytes(c) / 1e9, 11.33, 0.01);
  // Per-tensor: one f32 per matrix.
  c.quant = QuantMode::kFP8PerTensor;
  EXPECT_DOUBLE_EQ(case_bytes(c, 1, 8), 9 * (3 * h * i + 3 * 4) + 2 * h * 2);
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
  const Floor mem = case_floor(4e9, 1e11, r, GemmFormat::kBF16);  // 2 ms memory, 0.2 compute
  EXPECT_DOUBLE_EQ(mem.memory_s, 2e-3);
  EXPECT_DOUBLE_EQ(mem.compute_s, 2e-4);
  EXPECT_TRUE(mem.memory_bound());
  EXPECT_DOUBLE_EQ(mem.seconds(), 2e-3);
  const Floor cmp = case_floor(1e9, 5e15, r, GemmFormat::kBF16);
  EXPECT_FALSE(cmp.memory_bound());
  EXPECT_DOUBLE_EQ(cmp.seconds(), 10.0);
  EXPECT_THROW(case_floor(1, 1, Roofline{0, 1}, GemmFormat::kBF16), Error);
  EXPECT_THROW(case_floor(1, 1, Roofline{1, 0}, GemmFormat::kBF16), Error);
  // The fp8 rate was not measured (a bf16 run): an fp8 floor cannot be computed.
  EXPECT_THROW(case_floor(1, 1, r, GemmFormat::kFP8), Error);
}

TEST(BenchMath, GemmFormatFollowsTheActivations) {
  EXPECT_EQ(gemm_format(QuantMode::kBF16), GemmFormat::kBF16);
  EXPECT_EQ(gemm_format(QuantMode::kFP16), GemmFormat::kBF16);
  EXPECT_EQ(gemm_format(QuantMode::kNVFP4), GemmFormat::kBF16);
  EXPECT_EQ(gemm_format(QuantMode::kMXFP4), GemmFormat::kBF16);
  EXPECT_EQ(gemm_format(QuantMode::kFP8PerTensor), GemmFormat::kFP8);
  EXPECT_EQ(gemm_format(QuantMode::kFP8Block), GemmFormat::kFP8);
  EXPECT_EQ(gemm_format(QuantMode::kW4A8MXFP4MXFP8), GemmFormat::kFP8);
  EXPECT_EQ(gemm_format_name(GemmFormat::kFP8), "fp8");
  EXPECT_EQ(gemm_format_name(GemmFormat::kBF16), "bf16");
  const Roofline r{3e12, 700e12, 1400e12};
  EXPECT_DOUBLE_EQ(gemm_rate(r, GemmFormat::kBF16), 700e12);
  EXPECT_DOUBLE_EQ(gemm_rate(r, GemmFormat::kFP8), 1400e12);
  EXPECT_THROW(gemm_rate(Roofline{3e12, 700e12}, GemmFormat::kFP8), Error);
}

// The fp8 floor of a case: its own bytes over the copy bandwidth, its flops over the FP8 rate.
TEST(BenchMath, EachWeightFormatNamesItsPeerOrWhyNone) {
  EXPECT_EQ(peer_for_quant(QuantMode::kBF16).name, kPeerCublasGrouped);
  EXPECT_EQ(peer_for_quant(QuantMode::kFP16).name, kPeerCublasGrouped);
  EXPECT_EQ(peer_for_quant(QuantMode::kFP8Block).name, kPeerCublasLt);
  EXPECT_EQ(peer_for_quant(QuantMode::kFP8PerTensor).name, kPeerCublasLt);
  EXPECT_NE(peer_for_quant(QuantMode::kFP8Block).description.find("128x128"), std::string::npos);
  EXPECT_NE(peer_for_quant(QuantMode::kFP8PerTensor).description.find("per-tensor"),
            std::string::npos);
  for (QuantMode q : {QuantMode::kNVFP4, QuantMode::kMXFP4, QuantMode::kW4A8MXFP4MXFP8}) {
    const PeerInfo info = peer_for_quant(q);
    EXPECT_TRUE(info.name.empty()) << quant_mode_name(q);
    EXPECT_NE(info.description.find(quant_mode_name(q)), std::string::npos) << info.description;
  }
}

TEST(BenchMath, Fp8FloorUsesFp8BytesAndTheFp8Rate) {
  const Roofline r{3.0e12, 700e12, 1400e12};
  MoeConfig fp8 = preset("deepseek-v3");
  fp8.quant = QuantMode::kFP8Block;
  MoeConfig bf16 = preset("deepseek-v3");
  for (int64_t t : {1, 64, 4096, 16384}) {
    const double distinct = t == 1 ? 8 : 256;
    const Floor f = case_floor(fp8, t, distinct, r);
    const Floor b = case_floor(bf16, t, distinct, r);
    EXPECT_DOUBLE_EQ(f.memory_s, case_bytes(fp8, t, distinct) / 3.0e12) << t;
    EXPECT_DOUBLE_EQ(f.compute_s, case_flops(fp8, t) / 1400e12) << t;
    EXPECT_DOUBLE_EQ(b.compute_s, case_flops(bf16, t) / 700e12) << t;
    // Same work at twice the rate; a little over half the weight bytes.
    EXPECT_DOUBLE_EQ(b.compute_s / f.compute_s, 2.0) << t;
    EXPECT_LT(f.memory_s, b.memory_s) << t;
  }
  // Decode is memory-bound: 9 experts' e4m3 weights + scales (~396 MB) over 3 TB/s.
  const Floor decode = case_floor(fp8, 1, 8, r);
  EXPECT_TRUE(decode.memory_bound());
  EXPECT_NEAR(decode.seconds(), (9 * 44050944.0 + 2 * 7168 * 2) / 3.0e12, 1e-12);
  // Prefill of 16384 tokens is compute-bound on the fp8 rate.
  const Floor prefill = case_floor(fp8, 16384, 256, r);
  EXPECT_FALSE(prefill.memory_bound());
  EXPECT_DOUBLE_EQ(prefill.seconds(), case_flops(fp8, 16384) / 1400e12);
  // Without a measured fp8 rate the fp8 floor throws; bf16 still works.
  const Roofline no_fp8{3.0e12, 700e12};
  EXPECT_THROW(case_floor(fp8, 1, 8, no_fp8), Error);
  EXPECT_NO_THROW(case_floor(bf16, 1, 8, no_fp8));
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

TEST(BenchMath, ParsesTheL2FlushMode) {
  EXPECT_EQ(parse_l2_flush_mode("clean"), L2FlushMode::kClean);
  EXPECT_EQ(parse_l2_flush_mode("dirty"), L2FlushMode::kDirty);
  EXPECT_STREQ(l2_flush_mode_name(parse_l2_flush_mode("dirty")), "dirty");
  EXPECT_EQ(parse_l2_flush_mode("none"), L2FlushMode::kNone);
  EXPECT_STREQ(l2_flush_mode_name(L2FlushMode::kNone), "none");
  try {
    parse_l2_flush_mode("memset");
    FAIL() << "no error for an unknown flush";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("'memset' (clean, dirty or none)"), std::string::npos)
        << e.message();
  }
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
  c.floor = case_floor(c.bytes, c.flops, Roofline{3e12, 1e15}, GemmFormat::kBF16);
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
  run.l2_flush = "clean";
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
  EXPECT_EQ(j.at("settings").at("l2_flush"), "clean");
  EXPECT_NEAR(j.at("roofline").at("copy_gbps").get<double>(), 3000, 1e-9);
  EXPECT_NEAR(j.at("roofline").at("gemm_tflops").get<double>(), 700, 1e-9);
  EXPECT_EQ(j.at("cases").size(), 3u);
  EXPECT_EQ(j.at("summary").at("worst_case"), "a T=8");
  EXPECT_EQ(j.at("skipped").at(0).at("model"), "kimi-k2");
  EXPECT_THROW(summarize_cases({}), Error);
  EXPECT_TRUE(run_to_json(BenchRun{}).at("summary").is_null());
}

// ---- FP8 against BF16 (--vs-bf16) ---------------------------------------------------------------

CaseResult fp8_case(const std::string& model, int64_t t, double ms, const std::string& backend) {
  CaseResult c = sample_case(model, t, ms, 0.1);
  c.backend = backend;
  c.floor_gemm = GemmFormat::kFP8;
  return c;
}

TEST(BenchMath, AttachesBf16RowsToTheirFp8Rows) {
  std::vector<CaseResult> fp8 = {fp8_case("a", 1, 0.10, "grouped"),
                                 fp8_case("a", 8, 0.20, "grouped"),
                                 fp8_case("b", 8, 0.40, "grouped")};
  CaseResult b8 = sample_case("a", 8, 0.36, 0.25);  // bf16 floor 0.25 ms
  b8.backend = "grouped";
  b8.output_finite = false;
  CaseResult b1 = sample_case("a", 1, 0.15, 0.2);
  b1.backend = "grouped";
  const std::vector<CaseResult> bf16 = {b8, b1};  // any order; b T=8 has none
  attach_bf16(fp8, bf16);
  ASSERT_TRUE(fp8[0].bf16.has_value());
  EXPECT_NEAR(*fp8[0].fp8_speedup(), 1.5, 1e-12);
  EXPECT_TRUE(fp8[0].bf16_output_finite);
  ASSERT_TRUE(fp8[1].bf16.has_value());
  EXPECT_NEAR(*fp8[1].fp8_speedup(), 1.8, 1e-12);
  EXPECT_NEAR(*fp8[1].bf16_time_over_floor(), 0.36 / 0.25, 1e-9);
  EXPECT_FALSE(fp8[1].bf16_output_finite);
  EXPECT_FALSE(fp8[2].bf16.has_value());
  EXPECT_FALSE(fp8[2].fp8_speedup().has_value());
  EXPECT_FALSE(fp8[2].bf16_time_over_floor().has_value());
  // The fp8 row's own numbers are untouched.
  EXPECT_NEAR(fp8[1].ours.median_ms, 0.2, 1e-12);
  EXPECT_NEAR(fp8[1].time_over_floor(), 2.0, 1e-9);

  // Another backend's bf16 row, or two bf16 rows of a case, are mistakes of the caller.
  std::vector<CaseResult> other = {fp8_case("a", 1, 0.1, "grouped")};
  CaseResult dense = b1;
  dense.backend = "dense";
  const std::vector<CaseResult> wrong = {dense};
  EXPECT_THROW(attach_bf16(other, wrong), Error);
  const std::vector<CaseResult> twice = {b1, b1};
  EXPECT_THROW(attach_bf16(other, twice), Error);
}

TEST(BenchMath, JsonRowCarriesTheBf16TimesAndTheFloorsGemm) {
  CaseResult c = fp8_case("deepseek-v3", 64, 0.2, "grouped");
  nlohmann::json j = case_to_json(c);
  EXPECT_EQ(j.at("floor_gemm"), "fp8");
  for (const char* key : {"bf16_ms", "fp8_speedup", "bf16_floor_ms", "bf16_time_over_floor",
                          "bf16_output_finite", "bf16_timing"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_TRUE(j.at(key).is_null()) << key;
  }
  CaseResult b = sample_case("deepseek-v3", 64, 0.5, 0.4);
  b.backend = "grouped";
  attach_bf16(std::span(&c, 1), std::span<const CaseResult>(&b, 1));
  j = case_to_json(c);
  EXPECT_DOUBLE_EQ(j.at("bf16_ms").get<double>(), 0.5);
  EXPECT_NEAR(j.at("fp8_speedup").get<double>(), 2.5, 1e-12);
  EXPECT_NEAR(j.at("bf16_floor_ms").get<double>(), 0.4, 1e-12);
  EXPECT_NEAR(j.at("bf16_time_over_floor").get<double>(), 1.25, 1e-9);
  EXPECT_EQ(j.at("bf16_output_finite"), true);
  EXPECT_EQ(j.at("bf16_timing").at("count"), 3);
  // The fields the plot reads are those of the fp8 row.
  EXPECT_DOUBLE_EQ(j.at("ms").get<double>(), 0.2);
  EXPECT_NEAR(j.at("time_over_floor").get<double>(), 2.0, 1e-9);
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);
  EXPECT_EQ(case_to_json(sample_case("a", 1, 0.1, 0.1)).at("floor_gemm"), "bf16");
}

TEST(BenchMath, RunDocumentHasTheFp8RooflineAndSpeedupSummary) {
  BenchRun run;
  run.quant = "fp8_block";
  run.peer_name = std::string(kPeerCublasLt);
  run.vs_bf16 = true;
  run.roofline.rates = Roofline{3e12, 7e14, 1.4e15};
  run.roofline.gemm_n = 8192;
  run.roofline.fp8_gemm = summarize_times({0.8, 0.79, 0.81});
  run.roofline.fp8_gemm_n = 8192;
  run.roofline.fp8_gemm_algos = 4;
  run.roofline.fp8_gemm_fast_accum = true;
  run.loads.push_back({"a", 1e9, 2.0, "grouped", "fp8_block"});
  run.loads.push_back({"a", 2e9, 3.0, "grouped", "bf16"});
  run.cases = {fp8_case("a", 1, 0.10, "grouped"), fp8_case("a", 8, 0.20, "grouped"),
               fp8_case("b", 1, 0.30, "grouped")};
  CaseResult b1 = sample_case("a", 1, 0.16, 0.2), b8 = sample_case("a", 8, 0.25, 0.2);
  b1.backend = b8.backend = "grouped";
  const std::vector<CaseResult> bf16 = {b1, b8};
  attach_bf16(run.cases, bf16);  // speedups 1.6 and 1.25; b T=1 has none

  const Summary s = summarize_cases(run.cases);
  EXPECT_EQ(s.num_fp8_speedup_cases, 2);
  EXPECT_NEAR(s.geomean_fp8_speedup, std::sqrt(1.6 * 1.25), 1e-12);
  EXPECT_NEAR(s.min_fp8_speedup, 1.25, 1e-12);
  EXPECT_EQ(s.min_fp8_speedup_case, "a T=8");

  const nlohmann::json j = run_to_json(run);
  const nlohmann::json& roof = j.at("roofline");
  EXPECT_NEAR(roof.at("gemm_tflops").get<double>(), 700, 1e-9);
  EXPECT_NEAR(roof.at("fp8_gemm_tflops").get<double>(), 1400, 1e-9);
  EXPECT_EQ(roof.at("fp8_gemm_n"), 8192);
  EXPECT_EQ(roof.at("fp8_gemm_algos"), 4);
  EXPECT_EQ(roof.at("fp8_gemm_fast_accum"), true);
  EXPECT_NEAR(roof.at("fp8_gemm_timing").at("median_ms").get<double>(), 0.8, 1e-12);
  EXPECT_EQ(j.at("settings").at("vs_bf16"), true);
  EXPECT_EQ(j.at("settings").at("quant"), "fp8_block");
  EXPECT_EQ(j.at("settings").at("peer_name"), kPeerCublasLt);
  EXPECT_EQ(j.at("loads").at(1).at("quant"), "bf16");
  EXPECT_EQ(j.at("summary").at("num_fp8_speedup_cases"), 2);
  EXPECT_NEAR(j.at("summary").at("geomean_fp8_speedup").get<double>(), std::sqrt(2.0), 1e-12);
  EXPECT_EQ(j.at("summary").at("min_fp8_speedup_case"), "a T=8");
  EXPECT_NEAR(j.at("cases").at(0).at("fp8_speedup").get<double>(), 1.6, 1e-12);
  EXPECT_TRUE(j.at("cases").at(2).at("fp8_speedup").is_null());
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);

  // A bf16 run: the fp8 roofline fields are there, null; no speedups.
  BenchRun plain;
  plain.roofline.rates = Roofline{3e12, 7e14};
  plain.cases = {sample_case("a", 1, 0.1, 0.1)};
  const nlohmann::json p = run_to_json(plain);
  for (const char* key : {"fp8_gemm_tflops", "fp8_gemm_n", "fp8_gemm_algos", "fp8_gemm_fast_accum",
                          "fp8_gemm_timing"}) {
    ASSERT_TRUE(p.at("roofline").contains(key)) << key;
    EXPECT_TRUE(p.at("roofline").at(key).is_null()) << key;
  }
  EXPECT_EQ(p.at("settings").at("vs_bf16"), false);
  EXPECT_EQ(p.at("summary").at("num_fp8_speedup_cases"), 0);
  EXPECT_TRUE(p.at("summary").at("geomean_fp8_speedup").is_null());
}

TEST(BenchMath, SummaryLinesNameEachRatioThatHasCases) {
  std::vector<CaseResult> cases = {fp8_case("a", 1, 0.11, "grouped"),
                                   fp8_case("a", 8, 0.14, "grouped")};
  std::vector<std::string> lines = summary_lines(summarize_cases(cases));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "# time/floor over 2 cases: geometric mean 1.241, worst 1.400 (a T=8)");
  cases[0].peer = summarize_times({0.22});
  CaseResult b = sample_case("a", 8, 0.28, 0.2);
  b.backend = "grouped";
  attach_bf16(cases, std::span<const CaseResult>(&b, 1));
  lines = summary_lines(summarize_cases(cases));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1], "# peer/ours over 1 cases: geometric mean 2.000");
  EXPECT_EQ(lines[2],
            "# fp8 speedup (bf16 time / fp8 time, same backend) over 1 cases: geometric mean "
            "2.000, lowest 2.000 (a T=8)");
}

TEST(BenchMath, TableHasTheSpeedupColumnOnlyWhenAsked) {
  const std::string plain = table_header();
  EXPECT_EQ(table_header(false), plain);
  EXPECT_EQ(plain.find("fp8 speedup"), std::string::npos);
  const std::string header = table_header(true);
  EXPECT_EQ(header.substr(0, plain.size()), plain);
  EXPECT_EQ(header.substr(plain.size()), " fp8 speedup");
  CaseResult c = fp8_case("deepseek-v3", 4096, 1.5, "grouped");
  EXPECT_EQ(table_row(c), table_row(c, false));
  const std::string none = table_row(c, true);
  EXPECT_EQ(none.size(), header.size());
  EXPECT_EQ(none.back(), '-');
  CaseResult b = sample_case("deepseek-v3", 4096, 2.7, 1.0);
  b.backend = "grouped";
  attach_bf16(std::span(&c, 1), std::span<const CaseResult>(&b, 1));
  const std::string row = table_row(c, true);
  EXPECT_EQ(row.size(), header.size());
  EXPECT_EQ(row.substr(row.size() - 5), " 1.80");  // 2.7 / 1.5, right-aligned
  EXPECT_EQ(row.substr(0, plain.size()), table_row(c));
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
