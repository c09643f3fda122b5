// make_random_weights: checkpoint formats of every mode, determinism independent of the
// order of requests, the fused gate_up concatenation, statistics of the master weights and
// the router tensors; and the canonical tensor names.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "moe/errors.h"
#include "moe/weights.h"
#include "quant/formats.h"

namespace moe {
namespace {

std::vector<uint8_t> bytes_of(const TensorView& t) {
  if (t.empty()) return {};
  const auto* p = static_cast<const uint8_t*>(t.data());
  return std::vector<uint8_t>(p, p + t.nbytes());
}

std::vector<int64_t> shape_of(const TensorView& t) {
  return std::vector<int64_t>(t.shape().begin(), t.shape().end());
}

MoeConfig config_for(QuantMode q, bool biases = false, bool shared = false) {
  MoeConfig c = moe::testing::small_config(4, 2, 256, 128);
  c.quant = q;
  c.act_dtype = q == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
  c.has_expert_biases = biases;
  if (shared) {
    c.num_shared_experts = 2;
    c.shared_intermediate_size = 64;
  }
  return c;
}

constexpr Part kAllParts[] = {Part::kWeight, Part::kScale, Part::kGlobalScale, Part::kInputScale,
                              Part::kBias};

TEST(WeightNames, CanonicalNames) {
  EXPECT_EQ(expert_tensor_name(3, Proj::kDown, Part::kScale), "experts.3.down_proj.weight_scale");
  EXPECT_EQ(expert_tensor_name(kSharedExpert, Proj::kGate, Part::kWeight),
            "shared_experts.gate_proj.weight");
  EXPECT_EQ(expert_tensor_name(0, Proj::kGateUp, Part::kGlobalScale),
            "experts.0.gate_up_proj.weight_scale_2");
  EXPECT_EQ(expert_tensor_name(127, Proj::kUp, Part::kInputScale),
            "experts.127.up_proj.input_scale");
  EXPECT_EQ(expert_tensor_name(5, Proj::kUp, Part::kBias), "experts.5.up_proj.bias");
  EXPECT_EQ(proj_name(Proj::kGateUp), "gate_up_proj");
  EXPECT_EQ(part_name(Part::kGlobalScale), "weight_scale_2");
}

// ---- Formats ------------------------------------------------------------------------------------

struct PartExpect {
  Part part;
  DType dtype;
  std::vector<int64_t> shape;  // for gate_proj of I = 128, H = 256
};

std::vector<PartExpect> expected_parts(QuantMode q) {
  switch (q) {
    case QuantMode::kBF16:
      return {{Part::kWeight, DType::kBF16, {128, 256}}};
    case QuantMode::kFP16:
      return {{Part::kWeight, DType::kF16, {128, 256}}};
    case QuantMode::kFP8PerTensor:
      return {{Part::kWeight, DType::kE4M3, {128, 256}},
              {Part::kScale, DType::kF32, {1}},
              {Part::kInputScale, DType::kF32, {1}}};
    case QuantMode::kFP8Block:
      return {{Part::kWeight, DType::kE4M3, {128, 256}}, {Part::kScale, DType::kF32, {1, 2}}};
    case QuantMode::kNVFP4:
      return {{Part::kWeight, DType::kE2M1, {128, 256}},
              {Part::kScale, DType::kE4M3Scale, {128, 16}},
              {Part::kGlobalScale, DType::kF32, {1}}};
    case QuantMode::kMXFP4:
    case QuantMode::kW4A8MXFP4MXFP8:
      return {{Part::kWeight, DType::kE2M1, {128, 256}}, {Part::kScale, DType::kUE8M0, {128, 8}}};
  }
  return {};
}

class RandomWeightsFormat : public ::testing::TestWithParam<QuantMode> {};

TEST_P(RandomWeightsFormat, PartsHaveTheCheckpointDtypeAndShape) {
  const MoeConfig config = config_for(GetParam());
  auto src = make_random_weights(config, 1);
  const std::vector<PartExpect> expects = expected_parts(GetParam());
  for (Part part : kAllParts) {
    const TensorView t = src->expert_tensor(2, Proj::kGate, part);
    const PartExpect* e = nullptr;
    for (const PartExpect& x : expects) {
      if (x.part == part) e = &x;
    }
    if (e == nullptr) {
      EXPECT_TRUE(t.empty()) << part_name(part);
      continue;
    }
    ASSERT_FALSE(t.empty()) << part_name(part);
    EXPECT_EQ(t.dtype(), e->dtype) << part_name(part);
    EXPECT_EQ(shape_of(t), e->shape) << part_name(part);
    EXPECT_TRUE(t.device().is_cpu());
  }
  // down_proj is [H, I].
  EXPECT_EQ(shape_of(src->expert_tensor(0, Proj::kDown, Part::kWeight)),
            (std::vector<int64_t>{256, 128}));
  // No shared MLP in this config, no biases.
  EXPECT_TRUE(src->expert_tensor(kSharedExpert, Proj::kGate, Part::kWeight).empty());
  EXPECT_TRUE(src->expert_tensor(1, Proj::kUp, Part::kBias).empty());
  EXPECT_THROW(src->expert_tensor(4, Proj::kUp, Part::kWeight), Error);
}

/// Request order must not matter: a fresh source asked in another order gives the same bytes.
TEST_P(RandomWeightsFormat, DeterministicInAnyRequestOrder) {
  const MoeConfig config = config_for(GetParam(), true, true);
  auto forward = make_random_weights(config, 9);
  auto backward = make_random_weights(config, 9);
  auto other_seed = make_random_weights(config, 10);
  std::vector<std::vector<uint8_t>> first;
  const std::vector<int> experts = {0, 1, 2, 3, kSharedExpert};
  const std::vector<Proj> projs = {Proj::kGate, Proj::kUp, Proj::kDown};
  for (int e : experts) {
    for (Proj p : projs) {
      for (Part part : kAllParts) first.push_back(bytes_of(forward->expert_tensor(e, p, part)));
    }
  }
  size_t i = first.size();
  for (auto e = experts.rbegin(); e != experts.rend(); ++e) {
    for (auto p = projs.rbegin(); p != projs.rend(); ++p) {
      for (auto part = std::rbegin(kAllParts); part != std::rend(kAllParts); ++part) {
        EXPECT_EQ(bytes_of(backward->expert_tensor(*e, *p, *part)), first[--i])
            << expert_tensor_name(*e, *p, *part);
      }
    }
  }
  EXPECT_NE(bytes_of(other_seed->expert_tensor(1, Proj::kDown, Part::kWeight)),
            bytes_of(forward->expert_tensor(1, Proj::kDown, Part::kWeight)));
  // Experts and projections differ from one another.
  const std::vector<uint8_t> a = bytes_of(forward->expert_tensor(0, Proj::kGate, Part::kWeight));
  EXPECT_NE(a, bytes_of(forward->expert_tensor(0, Proj::kUp, Part::kWeight)));
  EXPECT_NE(a, bytes_of(forward->expert_tensor(1, Proj::kGate, Part::kWeight)));
}

TEST_P(RandomWeightsFormat, FusedGateUpConcatenatesGateAndUp) {
  const MoeConfig config = config_for(GetParam(), true, false);
  auto src = make_random_weights(config, 4);
  for (Part part : kAllParts) {
    const std::vector<uint8_t> gate = bytes_of(src->expert_tensor(1, Proj::kGate, part));
    const std::vector<uint8_t> up = bytes_of(src->expert_tensor(1, Proj::kUp, part));
    const TensorView fused = src->expert_tensor(1, Proj::kGateUp, part);
    if (gate.empty()) {
      EXPECT_TRUE(fused.empty()) << part_name(part);
      continue;
    }
    std::vector<uint8_t> want = gate;
    want.insert(want.end(), up.begin(), up.end());
    EXPECT_EQ(bytes_of(fused), want) << part_name(part);
    EXPECT_EQ(fused.size(0), 2 * src->expert_tensor(1, Proj::kGate, part).size(0))
        << part_name(part);
  }
}

INSTANTIATE_TEST_SUITE_P(AllModes, RandomWeightsFormat, ::testing::ValuesIn(all_quant_modes()),
                         [](const auto& info) { return std::string(quant_mode_name(info.param)); });

// ---- Values
// --------------------------------------------------------------------------------------

TEST(RandomWeights, MasterWeightsHaveUnitGain) {
  MoeConfig config = config_for(QuantMode::kBF16);
  auto src = make_random_weights(config, 5);
  const TensorView w = src->expert_tensor(0, Proj::kDown, Part::kWeight);  // [256, 128]
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const double v = fmt::bf16_to_float(w.data_as<uint16_t>()[i]);
    sum += v;
    sum_sq += v * v;
  }
  const double n = static_cast<double>(w.numel());
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(std::sqrt(sum_sq / n), 1.0 / std::sqrt(128.0), 0.03 / std::sqrt(128.0));
}

TEST(RandomWeights, StaticScalesAndSharedGlobalScale) {
  auto fp8 = make_random_weights(config_for(QuantMode::kFP8PerTensor), 6);
  EXPECT_EQ(fp8->expert_tensor(0, Proj::kGate, Part::kInputScale).data_as<float>()[0],
            6.0f / 448.0f);
  EXPECT_EQ(fp8->expert_tensor(0, Proj::kUp, Part::kInputScale).data_as<float>()[0], 6.0f / 448.0f);
  EXPECT_EQ(fp8->expert_tensor(0, Proj::kDown, Part::kInputScale).data_as<float>()[0],
            12.0f / 448.0f);
  const float gate_scale = fp8->expert_tensor(0, Proj::kGate, Part::kScale).data_as<float>()[0];
  const float up_scale = fp8->expert_tensor(0, Proj::kUp, Part::kScale).data_as<float>()[0];
  EXPECT_NE(gate_scale, up_scale);  // one scale per (expert, projection)
  EXPECT_GT(gate_scale, 0.0f);

  // NVFP4: gate and up of an expert share weight_scale_2; down has its own.
  auto nvfp4 = make_random_weights(config_for(QuantMode::kNVFP4), 6);
  const float up = nvfp4->expert_tensor(3, Proj::kUp, Part::kGlobalScale).data_as<float>()[0];
  const float gate = nvfp4->expert_tensor(3, Proj::kGate, Part::kGlobalScale).data_as<float>()[0];
  const float down = nvfp4->expert_tensor(3, Proj::kDown, Part::kGlobalScale).data_as<float>()[0];
  EXPECT_EQ(gate, up);
  EXPECT_NE(gate, down);
  EXPECT_GT(gate, 0.0f);
}

TEST(RandomWeights, SharedMlpAndBiases) {
  const MoeConfig config = config_for(QuantMode::kMXFP4, true, true);
  auto src = make_random_weights(config, 8);
  EXPECT_EQ(shape_of(src->expert_tensor(kSharedExpert, Proj::kGate, Part::kWeight)),
            (std::vector<int64_t>{64, 256}));
  EXPECT_EQ(shape_of(src->expert_tensor(kSharedExpert, Proj::kDown, Part::kScale)),
            (std::vector<int64_t>{256, 2}));
  EXPECT_TRUE(src->expert_tensor(kSharedExpert, Proj::kDown, Part::kBias).empty());
  const TensorView bias = src->expert_tensor(2, Proj::kDown, Part::kBias);
  ASSERT_EQ(bias.dtype(), DType::kF32);
  ASSERT_EQ(shape_of(bias), (std::vector<int64_t>{256}));
  double sum_sq = 0;
  for (int64_t i = 0; i < bias.numel(); ++i)
    sum_sq += bias.data_as<float>()[i] * bias.data_as<float>()[i];
  EXPECT_NEAR(std::sqrt(sum_sq / 256), 0.1, 0.02);
  EXPECT_EQ(shape_of(src->expert_tensor(2, Proj::kGateUp, Part::kBias)),
            (std::vector<int64_t>{256}));
}

TEST(RandomWeights, RouterTensors) {
  MoeConfig config = config_for(QuantMode::kBF16);
  auto plain = make_random_weights(config, 12);
  const TensorView w = plain->router_weight();
  ASSERT_EQ(w.dtype(), DType::kF32);
  ASSERT_EQ(shape_of(w), (std::vector<int64_t>{4, 256}));
  double sum_sq = 0;
  for (int64_t i = 0; i < w.numel(); ++i) sum_sq += w.data_as<float>()[i] * w.data_as<float>()[i];
  EXPECT_NEAR(std::sqrt(sum_sq / w.numel()), 1.0 / 16.0, 0.1 / 16.0);
  EXPECT_TRUE(plain->router_bias().empty());
  EXPECT_TRUE(plain->correction_bias().empty());
  EXPECT_NE(plain->describe().find("seed 12"), std::string::npos);

  config.has_router_bias = true;
  config.routing.method = RoutingMethod::kDeepSeekV3;
  config.routing.has_correction_bias = true;
  config.routing.num_groups = 2;
  config.routing.topk_groups = 1;
  auto biased = make_random_weights(config, 12);
  EXPECT_EQ(shape_of(biased->router_bias()), (std::vector<int64_t>{4}));
  EXPECT_EQ(shape_of(biased->correction_bias()), (std::vector<int64_t>{4}));
  EXPECT_NE(bytes_of(biased->router_bias()), bytes_of(biased->correction_bias()));
  // The router weight does not depend on the other flags.
  EXPECT_EQ(bytes_of(biased->router_weight()), bytes_of(plain->router_weight()));
}

TEST(RandomWeights, FusedFp8BlockNeedsWholeBlocks) {
  MoeConfig config = config_for(QuantMode::kFP8Block);
  config.intermediate_size = 72;
  auto src = make_random_weights(config, 13);
  EXPECT_EQ(shape_of(src->expert_tensor(0, Proj::kGate, Part::kScale)),
            (std::vector<int64_t>{1, 2}));
  try {
    src->expert_tensor(0, Proj::kGateUp, Part::kWeight);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("experts.0.gate_up_proj"), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace moe
