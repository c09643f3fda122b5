// MoeConfig / Mapping: enum names and their parsers, validate() (every rule, and the message
// naming the field and value), summary().
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "moe/config.h"
#include "moe/errors.h"

namespace moe {
namespace {

// The message of the moe::Error that `fn` throws ("" and a test failure when none is thrown).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.message();
  }
  ADD_FAILURE() << "expected a moe::Error";
  return "";
}

void expect_contains(const std::string& text, const std::vector<std::string>& parts) {
  for (const auto& part : parts) {
    EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
  }
}

// ---- Names -------------------------------------------------------------------------------

TEST(ConfigNames, ActivationRoundTrip) {
  const std::vector<std::pair<Activation, std::string>> expected = {
      {Activation::kSwiGLU, "swiglu"}, {Activation::kSwiGLUOAI, "swiglu_oai"}};
  for (const auto& [value, name] : expected) {
    EXPECT_EQ(activation_name(value), name);
    EXPECT_EQ(parse_activation(name), value);
  }
}

TEST(ConfigNames, RoutingMethodRoundTrip) {
  const std::vector<std::pair<RoutingMethod, std::string>> expected = {
      {RoutingMethod::kSoftmaxTopK, "softmax_topk"},
      {RoutingMethod::kDeepSeekV3, "deepseek_v3"},
      {RoutingMethod::kLlama4, "llama4"},
      {RoutingMethod::kGptOss, "gpt_oss"}};
  for (const auto& [value, name] : expected) {
    EXPECT_EQ(routing_method_name(value), name);
    EXPECT_EQ(parse_routing_method(name), value);
  }
}

TEST(ConfigNames, QuantModesAreAllListedAndRoundTrip) {
  const std::vector<std::string> expected = {"bf16",  "fp16",  "fp8_per_tensor",  "fp8_block",
                                             "nvfp4", "mxfp4", "w4a8_mxfp4_mxfp8"};
  const std::vector<QuantMode> modes = all_quant_modes();
  ASSERT_EQ(modes.size(), expected.size());
  std::set<QuantMode> distinct(modes.begin(), modes.end());
  EXPECT_EQ(distinct.size(), modes.size());
  for (size_t i = 0; i < modes.size(); ++i) {
    EXPECT_EQ(quant_mode_name(modes[i]), expected[i]);
    EXPECT_EQ(parse_quant_mode(expected[i]), modes[i]);
  }
  EXPECT_EQ(modes.front(), QuantMode::kBF16);
  EXPECT_EQ(parse_quant_mode("fp8_block"), QuantMode::kFP8Block);
  EXPECT_EQ(parse_quant_mode("w4a8_mxfp4_mxfp8"), QuantMode::kW4A8MXFP4MXFP8);
}

TEST(ConfigNames, UnknownNamesListTheAcceptedOnes) {
  expect_contains(error_of([] { parse_activation("gelu"); }),
                  {"activation", "'gelu'", "swiglu", "swiglu_oai"});
  expect_contains(
      error_of([] { parse_routing_method("sigmoid"); }),
      {"routing method", "'sigmoid'", "softmax_topk", "deepseek_v3", "llama4", "gpt_oss"});
  expect_contains(error_of([] { parse_quant_mode("fp8"); }),
                  {"quant mode", "'fp8'", "bf16", "fp16", "fp8_per_tensor", "fp8_block", "nvfp4",
                   "mxfp4", "w4a8_mxfp4_mxfp8"});
  // Names are exact: no case folding, no trimming.
  EXPECT_THROW(parse_quant_mode("BF16"), Error);
  EXPECT_THROW(parse_activation("swiglu "), Error);
  EXPECT_THROW(parse_routing_method(""), Error);
}

// ---- validate() --------------------------------------------------------------------------

MoeConfig softmax_config() {
  MoeConfig c;
  c.name = "test-softmax";
  c.num_experts = 8;
  c.top_k = 2;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  return c;
}

MoeConfig deepseek_config() {
  MoeConfig c = softmax_config();
  c.name = "test-deepseek";
  c.num_experts = 64;
  c.top_k = 6;
  c.routing.method = RoutingMethod::kDeepSeekV3;
  c.routing.num_groups = 8;
  c.routing.topk_groups = 4;
  c.routing.routed_scaling_factor = 2.5f;
  c.routing.has_correction_bias = true;
  c.num_shared_experts = 1;
  c.shared_intermediate_size = 512;
  return c;
}

TEST(ConfigValidate, ValidConfigsPass) {
  EXPECT_NO_THROW(softmax_config().validate());
  EXPECT_NO_THROW(deepseek_config().validate());

  MoeConfig c = deepseek_config();
  c.num_experts = 8;  // group size 1 is fine without a correction bias (group score = max)
  c.routing.has_correction_bias = false;
  c.top_k = 4;
  EXPECT_NO_THROW(c.validate());

  c = softmax_config();
  c.quant = QuantMode::kFP16;
  c.act_dtype = DType::kF16;
  EXPECT_NO_THROW(c.validate());

  c = softmax_config();
  c.hidden_size = 48;  // multiple of 16, not of 32
  c.intermediate_size = 80;
  c.quant = QuantMode::kNVFP4;
  EXPECT_NO_THROW(c.validate());

  c = softmax_config();
  c.top_k = 1;
  c.routing.method = RoutingMethod::kLlama4;
  c.apply_router_weight_on_input = true;
  EXPECT_NO_THROW(c.validate());

  c = softmax_config();
  c.top_k = c.num_experts;  // k == E is allowed
  EXPECT_NO_THROW(c.validate());
}

struct InvalidCase {
  std::string what;
  std::function<MoeConfig()> make;
  std::vector<std::string> message_parts;
};

std::vector<InvalidCase> invalid_cases() {
  auto softmax = [](std::function<void(MoeConfig&)> edit) {
    return [edit] {
      MoeConfig c = softmax_config();
      edit(c);
      return c;
    };
  };
  auto deepseek = [](std::function<void(MoeConfig&)> edit) {
    return [edit] {
      MoeConfig c = deepseek_config();
      edit(c);
      return c;
    };
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  return {
      {"no experts", softmax([](MoeConfig& c) { c.num_experts = 0; }), {"num_experts = 0"}},
      {"negative experts", softmax([](MoeConfig& c) { c.num_experts = -3; }), {"num_experts = -3"}},
      {"top_k 0", softmax([](MoeConfig& c) { c.top_k = 0; }), {"top_k = 0", "num_experts = 8"}},
      {"top_k > E", softmax([](MoeConfig& c) { c.top_k = 9; }), {"top_k = 9", "num_experts = 8"}},
      {"hidden 0", softmax([](MoeConfig& c) { c.hidden_size = 0; }), {"hidden_size = 0"}},
      {"intermediate < 0",
       softmax([](MoeConfig& c) { c.intermediate_size = -1; }),
       {"intermediate_size = -1"}},
      {"max tokens 0", softmax([](MoeConfig& c) { c.max_num_tokens = 0; }), {"max_num_tokens = 0"}},
      {"groups 0",
       deepseek([](MoeConfig& c) { c.routing.num_groups = 0; }),
       {"routing.num_groups = 0"}},
      {"groups do not divide E",
       deepseek([](MoeConfig& c) { c.routing.num_groups = 3; }),
       {"routing.num_groups = 3", "divide num_experts = 64"}},
      {"topk_groups 0",
       deepseek([](MoeConfig& c) { c.routing.topk_groups = 0; }),
       {"routing.topk_groups = 0", "routing.num_groups = 8"}},
      {"topk_groups > groups",
       deepseek([](MoeConfig& c) { c.routing.topk_groups = 9; }),
       {"routing.topk_groups = 9", "routing.num_groups = 8"}},
      {"k exceeds the kept experts",
       deepseek([](MoeConfig& c) {
         c.routing.topk_groups = 1;  // 1 group of 8 experts kept
         c.top_k = 9;
       }),
       {"top_k = 9", "routing.topk_groups = 1", "group size 8"}},
      {"group of 1 with a correction bias",
       deepseek([](MoeConfig& c) {
         c.num_experts = 8;
         c.top_k = 2;
       }),
       {"group size 1", "has_correction_bias"}},
      {"groups with softmax routing",
       softmax([](MoeConfig& c) { c.routing.num_groups = 2; }),
       {"routing.num_groups = 2", "softmax_topk"}},
      {"topk_groups with gpt_oss routing",
       softmax([](MoeConfig& c) {
         c.routing.method = RoutingMethod::kGptOss;
         c.routing.topk_groups = 2;
       }),
       {"routing.topk_groups = 2", "gpt_oss"}},
      {"correction bias with llama4 routing",
       softmax([](MoeConfig& c) {
         c.routing.method = RoutingMethod::kLlama4;
         c.top_k = 1;
         c.routing.has_correction_bias = true;
       }),
       {"has_correction_bias", "llama4"}},
      {"weight on input with k 2",
       softmax([](MoeConfig& c) { c.apply_router_weight_on_input = true; }),
       {"apply_router_weight_on_input", "top_k = 2"}},
      {"shared count without size",
       softmax([](MoeConfig& c) { c.num_shared_experts = 1; }),
       {"num_shared_experts = 1", "shared_intermediate_size = 0"}},
      {"shared size without count",
       softmax([](MoeConfig& c) { c.shared_intermediate_size = 1024; }),
       {"num_shared_experts = 0", "shared_intermediate_size = 1024"}},
      {"negative shared",
       softmax([](MoeConfig& c) {
         c.num_shared_experts = -1;
         c.shared_intermediate_size = 512;
       }),
       {"num_shared_experts = -1"}},
      {"f32 activations",
       softmax([](MoeConfig& c) { c.act_dtype = DType::kF32; }),
       {"act_dtype = f32", "bf16 or f16"}},
      {"ep partials in another 16-bit type",
       softmax([](MoeConfig& c) { c.ep_partial_dtype = DType::kF16; }),
       {"ep_partial_dtype = f16", "f32 or act_dtype (bf16)"}},
      {"fp16 weights with bf16 activations",
       softmax([](MoeConfig& c) { c.quant = QuantMode::kFP16; }),
       {"fp16", "act_dtype f16", "bf16"}},
      {"nvfp4 hidden",
       softmax([](MoeConfig& c) {
         c.quant = QuantMode::kNVFP4;
         c.hidden_size = 2056;
       }),
       {"hidden_size = 2056", "multiple of 16", "nvfp4"}},
      {"nvfp4 intermediate",
       softmax([](MoeConfig& c) {
         c.quant = QuantMode::kNVFP4;
         c.intermediate_size = 1000;
       }),
       {"intermediate_size = 1000", "multiple of 16", "nvfp4"}},
      {"nvfp4 shared intermediate",
       deepseek([](MoeConfig& c) {
         c.quant = QuantMode::kNVFP4;
         c.shared_intermediate_size = 1000;
       }),
       {"shared_intermediate_size = 1000", "multiple of 16"}},
      {"mxfp4 hidden",
       softmax([](MoeConfig& c) {
         c.quant = QuantMode::kMXFP4;
         c.hidden_size = 2064;
       }),
       {"hidden_size = 2064", "multiple of 32", "mxfp4"}},
      {"w4a8 intermediate",
       softmax([](MoeConfig& c) {
         c.quant = QuantMode::kW4A8MXFP4MXFP8;
         c.intermediate_size = 48;
       }),
       {"intermediate_size = 48", "multiple of 32", "w4a8_mxfp4_mxfp8"}},
      {"mxfp4 shared intermediate",
       deepseek([](MoeConfig& c) {
         c.quant = QuantMode::kMXFP4;
         c.shared_intermediate_size = 528;
       }),
       {"shared_intermediate_size = 528", "multiple of 32"}},
      {"swiglu_oai limit 0",
       softmax([](MoeConfig& c) {
         c.activation = Activation::kSwiGLUOAI;
         c.swiglu_oai.limit = 0.0f;
       }),
       {"swiglu_oai.limit = 0"}},
      {"swiglu_oai limit NaN",
       softmax([nan](MoeConfig& c) {
         c.activation = Activation::kSwiGLUOAI;
         c.swiglu_oai.limit = nan;
       }),
       {"swiglu_oai.limit = nan"}},
      {"scale 0",
       softmax([](MoeConfig& c) { c.routing.routed_scaling_factor = 0.0f; }),
       {"routing.routed_scaling_factor = 0"}},
      {"scale < 0",
       deepseek([](MoeConfig& c) { c.routing.routed_scaling_factor = -2.5f; }),
       {"routing.routed_scaling_factor = -2.5"}},
      {"scale inf",
       deepseek([inf](MoeConfig& c) { c.routing.routed_scaling_factor = inf; }),
       {"routing.routed_scaling_factor = inf"}},
      {"scale NaN",
       softmax([nan](MoeConfig& c) { c.routing.routed_scaling_factor = nan; }),
       {"routing.routed_scaling_factor = nan"}},
  };
}

TEST(ConfigValidate, EveryRuleRejectsAndNamesTheFieldAndValue) {
  for (const InvalidCase& ic : invalid_cases()) {
    SCOPED_TRACE(ic.what);
    const MoeConfig c = ic.make();
    const std::string message = error_of([&c] { c.validate(); });
    expect_contains(message, ic.message_parts);
    expect_contains(message, {"'" + c.name + "'"});  // the config is named
  }
}

TEST(ConfigValidate, LimitIsIgnoredForPlainSwiGLU) {
  MoeConfig c = softmax_config();
  c.swiglu_oai.limit = -1.0f;  // not read by kSwiGLU
  EXPECT_NO_THROW(c.validate());
}

// ---- Mapping -----------------------------------------------------------------------------

TEST(MappingValidate, Ranks) {
  EXPECT_NO_THROW(Mapping{}.validate());
  EXPECT_NO_THROW((Mapping{.ep_size = 8, .ep_rank = 7}).validate());
  expect_contains(error_of([] { Mapping{.ep_size = 0, .ep_rank = 0}.validate(); }),
                  {"ep_size = 0"});
  expect_contains(error_of([] { Mapping{.ep_size = 4, .ep_rank = -1}.validate(); }),
                  {"ep_rank = -1", "ep_size = 4"});
  expect_contains(error_of([] { Mapping{.ep_size = 4, .ep_rank = 4}.validate(); }),
                  {"ep_rank = 4", "ep_size = 4"});
}

// ---- summary() ---------------------------------------------------------------------------

TEST(ConfigSummary, AlignedLinesWithTheLayersParameters) {
  MoeConfig c = deepseek_config();
  c.quant = QuantMode::kFP8Block;
  const std::string s = c.summary();
  expect_contains(s, {"test-deepseek", "64, top-k 6", "256, intermediate 512", "swiglu",
                      "deepseek_v3", "groups 8", "keep 4", "scale 2.5", "correction bias",
                      "1 (intermediate 512", "fp8_block", "bf16", "8192", "ep partials     f32"});

  // Every line is "label" padded to one column, then the value.
  std::vector<std::string> lines;
  size_t begin = 0;
  for (size_t end; (end = s.find('\n', begin)) != std::string::npos; begin = end + 1) {
    lines.push_back(s.substr(begin, end - begin));
  }
  EXPECT_EQ(begin, s.size()) << "the summary ends with a newline";
  ASSERT_GE(lines.size(), 8u);
  for (const auto& line : lines) {
    ASSERT_GT(line.size(), 16u) << line;
    EXPECT_EQ(line[15], ' ') << line;
    EXPECT_NE(line[16], ' ') << line;
  }

  MoeConfig oai = softmax_config();
  oai.activation = Activation::kSwiGLUOAI;
  oai.routing.method = RoutingMethod::kGptOss;
  oai.has_router_bias = true;
  oai.has_expert_biases = true;
  expect_contains(oai.summary(),
                  {"swiglu_oai (alpha 1.702, limit 7)", "gpt_oss", "router, experts", "none"});
}

}  // namespace
}  // namespace moe
