// Built-in presets: every model of facts/models.md, with its numbers, and each one valid.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moe/config.h"
#include "moe/errors.h"

namespace moe {
namespace {

// One row of ../shared/facts/models.md, written out independently of presets.cc.
struct ExpectedPreset {
  std::string name;
  int hidden, intermediate, experts, top_k;
  int num_shared, shared_intermediate;
  RoutingMethod routing;
  bool renormalize;
  int num_groups, topk_groups;
  float scale;
  bool correction_bias;
  Activation activation;
  bool router_bias, expert_biases, weight_on_input;
};

const std::vector<ExpectedPreset>& expected_presets() {
  using R = RoutingMethod;
  using A = Activation;
  static const std::vector<ExpectedPreset> rows = {
      // name, H, I, E, k, shared, shared I, routing, renorm, groups, keep, scale, corr bias,
      // activation, router bias, expert biases, weight on input
      {"mixtral-8x7b", 4096, 14336, 8, 2, 0, 0, R::kSoftmaxTopK, true, 1, 1, 1.0f, false,
       A::kSwiGLU, false, false, false},
      {"mixtral-8x22b", 6144, 16384, 8, 2, 0, 0, R::kSoftmaxTopK, true, 1, 1, 1.0f, false,
       A::kSwiGLU, false, false, false},
      {"qwen3-30b-a3b", 2048, 768, 128, 8, 0, 0, R::kSoftmaxTopK, true, 1, 1, 1.0f, false,
       A::kSwiGLU, false, false, false},
      {"qwen3-235b-a22b", 4096, 1536, 128, 8, 0, 0, R::kSoftmaxTopK, true, 1, 1, 1.0f, false,
       A::kSwiGLU, false, false, false},
      {"olmoe-1b-7b", 2048, 1024, 64, 8, 0, 0, R::kSoftmaxTopK, false, 1, 1, 1.0f, false,
       A::kSwiGLU, false, false, false},
      {"deepseek-v2-lite", 2048, 1408, 64, 6, 2, 2816, R::kSoftmaxTopK, false, 1, 1, 1.0f, false,
       A::kSwiGLU, false, false, false},
      {"deepseek-v3", 7168, 2048, 256, 8, 1, 2048, R::kDeepSeekV3, true, 8, 4, 2.5f, true,
       A::kSwiGLU, false, false, false},
      {"kimi-k2", 7168, 2048, 384, 8, 1, 2048, R::kDeepSeekV3, true, 1, 1, 2.827f, true, A::kSwiGLU,
       false, false, false},
      {"gpt-oss-20b", 2880, 2880, 32, 4, 0, 0, R::kGptOss, true, 1, 1, 1.0f, false, A::kSwiGLUOAI,
       true, true, false},
      {"gpt-oss-120b", 2880, 2880, 128, 4, 0, 0, R::kGptOss, true, 1, 1, 1.0f, false, A::kSwiGLUOAI,
       true, true, false},
      {"llama4-scout", 5120, 8192, 16, 1, 1, 8192, R::kLlama4, false, 1, 1, 1.0f, false, A::kSwiGLU,
       false, false, true},
      {"llama4-maverick", 5120, 8192, 128, 1, 1, 8192, R::kLlama4, false, 1, 1, 1.0f, false,
       A::kSwiGLU, false, false, true},
  };
  return rows;
}

TEST(Presets, NamesAreTheModelsOfTheFacts) {
  std::vector<std::string> expected;
  for (const auto& row : expected_presets()) expected.push_back(row.name);
  EXPECT_EQ(preset_names(), expected);
}

TEST(Presets, EachHasTheFactsNumbersAndValidates) {
  for (const auto& row : expected_presets()) {
    SCOPED_TRACE(row.name);
    const MoeConfig c = preset(row.name);
    EXPECT_NO_THROW(c.validate());
    EXPECT_EQ(c.name, row.name);
    EXPECT_EQ(c.hidden_size, row.hidden);
    EXPECT_EQ(c.intermediate_size, row.intermediate);
    EXPECT_EQ(c.num_experts, row.experts);
    EXPECT_EQ(c.top_k, row.top_k);
    EXPECT_EQ(c.num_shared_experts, row.num_shared);
    EXPECT_EQ(c.shared_intermediate_size, row.shared_intermediate);
    EXPECT_EQ(c.activation, row.activation);
    EXPECT_EQ(c.has_router_bias, row.router_bias);
    EXPECT_EQ(c.has_expert_biases, row.expert_biases);
    EXPECT_EQ(c.apply_router_weight_on_input, row.weight_on_input);
    EXPECT_EQ(c.routing.method, row.routing);
    if (row.routing == RoutingMethod::kSoftmaxTopK || row.routing == RoutingMethod::kDeepSeekV3) {
      EXPECT_EQ(c.routing.renormalize, row.renormalize);  // the others do not read it
    }
    EXPECT_EQ(c.routing.num_groups, row.num_groups);
    EXPECT_EQ(c.routing.topk_groups, row.topk_groups);
    EXPECT_FLOAT_EQ(c.routing.routed_scaling_factor, row.scale);
    EXPECT_EQ(c.routing.has_correction_bias, row.correction_bias);
    if (row.activation == Activation::kSwiGLUOAI) {
      EXPECT_FLOAT_EQ(c.swiglu_oai.alpha, 1.702f);
      EXPECT_FLOAT_EQ(c.swiglu_oai.limit, 7.0f);
    }
    // Common defaults: the checkpoint decides the quantization.
    EXPECT_EQ(c.quant, QuantMode::kBF16);
    EXPECT_EQ(c.act_dtype, DType::kBF16);
    EXPECT_EQ(c.max_num_tokens, 8192);
  }
}

TEST(Presets, ValidateUnderEveryWeightFormat) {
  // The presets' sizes are all multiples of 32, so every format fits every model (fp16 with
  // f16 activations).
  for (const auto& name : preset_names()) {
    for (QuantMode q : all_quant_modes()) {
      SCOPED_TRACE(name + " " + std::string(quant_mode_name(q)));
      MoeConfig c = preset(name);
      c.quant = q;
      if (q == QuantMode::kFP16) c.act_dtype = DType::kF16;
      EXPECT_NO_THROW(c.validate());
    }
  }
}

TEST(Presets, DeepSeekV3LayerSize) {
  // facts/models.md: 3*H*I*E = 11.3e9 parameters per MoE layer.
  const MoeConfig c = preset("deepseek-v3");
  const double params = 3.0 * c.hidden_size * c.intermediate_size * c.num_experts;
  EXPECT_NEAR(params / 1e9, 11.3, 0.05);
}

TEST(Presets, SummaryNamesThePreset) {
  const std::string s = preset("kimi-k2").summary();
  EXPECT_NE(s.find("kimi-k2"), std::string::npos) << s;
  EXPECT_NE(s.find("384, top-k 8"), std::string::npos) << s;
  EXPECT_NE(s.find("2.827"), std::string::npos) << s;
}

TEST(Presets, UnknownNameListsTheKnownOnes) {
  try {
    preset("mixtral-8x7B");  // names are exact
    FAIL() << "expected a moe::Error";
  } catch (const Error& e) {
    const std::string message = e.message();
    EXPECT_NE(message.find("'mixtral-8x7B'"), std::string::npos) << message;
    for (const auto& name : preset_names()) {
      EXPECT_NE(message.find(name), std::string::npos) << name << " not in: " << message;
    }
  }
}

}  // namespace
}  // namespace moe
