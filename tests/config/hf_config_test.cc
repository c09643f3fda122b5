// Hugging Face config.json reader: the published configs of each family (tests/data/
// hf_configs), the quantization and dtype variants, and every error path.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "moe/config.h"
#include "moe/errors.h"

namespace moe {
namespace {

using Json = nlohmann::json;

std::string fixture_path(const std::string& family) {
  return std::string(MOE_TEST_DATA_DIR) + "/hf_configs/" + family + ".json";
}

Json load_fixture(const std::string& family) {
  std::ifstream in(fixture_path(family));
  EXPECT_TRUE(in.good()) << fixture_path(family);
  return Json::parse(in);
}

// Parses an edited config as text, under the source name "edited.json".
MoeConfig parse(const Json& json) { return config_from_hf_json_text(json.dump(), "edited.json"); }

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

// Every field of the layer except the name, the weight format and the activation type.
void expect_same_layer(const MoeConfig& got, const MoeConfig& want) {
  EXPECT_EQ(got.num_experts, want.num_experts);
  EXPECT_EQ(got.top_k, want.top_k);
  EXPECT_EQ(got.hidden_size, want.hidden_size);
  EXPECT_EQ(got.intermediate_size, want.intermediate_size);
  EXPECT_EQ(got.activation, want.activation);
  EXPECT_FLOAT_EQ(got.swiglu_oai.alpha, want.swiglu_oai.alpha);
  EXPECT_FLOAT_EQ(got.swiglu_oai.limit, want.swiglu_oai.limit);
  EXPECT_EQ(got.routing.method, want.routing.method);
  EXPECT_EQ(got.routing.renormalize, want.routing.renormalize);
  EXPECT_EQ(got.routing.num_groups, want.routing.num_groups);
  EXPECT_EQ(got.routing.topk_groups, want.routing.topk_groups);
  EXPECT_FLOAT_EQ(got.routing.routed_scaling_factor, want.routing.routed_scaling_factor);
  EXPECT_EQ(got.routing.has_correction_bias, want.routing.has_correction_bias);
  EXPECT_EQ(got.has_router_bias, want.has_router_bias);
  EXPECT_EQ(got.has_expert_biases, want.has_expert_biases);
  EXPECT_EQ(got.num_shared_experts, want.num_shared_experts);
  EXPECT_EQ(got.shared_intermediate_size, want.shared_intermediate_size);
  EXPECT_EQ(got.apply_router_weight_on_input, want.apply_router_weight_on_input);
  EXPECT_EQ(got.max_num_tokens, want.max_num_tokens);
}

// ---- The published configs ---------------------------------------------------------------

struct FixtureCase {
  std::string family;  // file name and model_type
  std::string preset;  // the preset of the same model
  QuantMode quant;
  DType act_dtype;
};

TEST(HfConfig, EachPublishedConfigGivesItsModelsLayer) {
  const std::vector<FixtureCase> cases = {
      {"mixtral", "mixtral-8x7b", QuantMode::kBF16, DType::kBF16},
      {"qwen3_moe", "qwen3-30b-a3b", QuantMode::kBF16, DType::kBF16},
      {"olmoe", "olmoe-1b-7b", QuantMode::kBF16, DType::kBF16},  // fp32 checkpoint
      {"deepseek_v2", "deepseek-v2-lite", QuantMode::kBF16, DType::kBF16},
      {"deepseek_v3", "deepseek-v3", QuantMode::kFP8Block, DType::kBF16},
      {"kimi_k2", "kimi-k2", QuantMode::kFP8Block, DType::kBF16},
      {"gpt_oss", "gpt-oss-20b", QuantMode::kMXFP4, DType::kBF16},
      {"llama4", "llama4-scout", QuantMode::kBF16, DType::kBF16},
  };
  for (const auto& fc : cases) {
    SCOPED_TRACE(fc.family);
    const MoeConfig c = config_from_hf_json_file(fixture_path(fc.family));
    EXPECT_NO_THROW(c.validate());
    EXPECT_EQ(c.name, fc.family);
    EXPECT_EQ(c.quant, fc.quant);
    EXPECT_EQ(c.act_dtype, fc.act_dtype);
    expect_same_layer(c, preset(fc.preset));
  }
}

TEST(HfConfig, SpotChecksOfTheKeyNumbers) {
  const MoeConfig mixtral = config_from_hf_json_file(fixture_path("mixtral"));
  EXPECT_EQ(mixtral.num_experts, 8);
  EXPECT_EQ(mixtral.top_k, 2);
  EXPECT_EQ(mixtral.hidden_size, 4096);
  EXPECT_EQ(mixtral.intermediate_size, 14336);  // intermediate_size, not a moe_* key
  EXPECT_TRUE(mixtral.routing.renormalize);

  const MoeConfig qwen = config_from_hf_json_file(fixture_path("qwen3_moe"));
  EXPECT_EQ(qwen.intermediate_size, 768);  // moe_intermediate_size, not the dense 6144
  EXPECT_EQ(qwen.num_experts, 128);
  EXPECT_TRUE(qwen.routing.renormalize);  // norm_topk_prob true

  const MoeConfig olmoe = config_from_hf_json_file(fixture_path("olmoe"));
  EXPECT_EQ(olmoe.intermediate_size, 1024);
  EXPECT_FALSE(olmoe.routing.renormalize);  // norm_topk_prob false

  const MoeConfig v2 = config_from_hf_json_file(fixture_path("deepseek_v2"));
  EXPECT_EQ(v2.routing.method, RoutingMethod::kSoftmaxTopK);
  EXPECT_FALSE(v2.routing.renormalize);
  EXPECT_EQ(v2.num_shared_experts, 2);
  EXPECT_EQ(v2.shared_intermediate_size, 2 * 1408);
  EXPECT_EQ(v2.top_k, 6);

  const MoeConfig v3 = config_from_hf_json_file(fixture_path("deepseek_v3"));
  EXPECT_EQ(v3.hidden_size, 7168);
  EXPECT_EQ(v3.intermediate_size, 2048);  // not the dense 18432
  EXPECT_EQ(v3.num_experts, 256);
  EXPECT_EQ(v3.routing.num_groups, 8);
  EXPECT_EQ(v3.routing.topk_groups, 4);
  EXPECT_FLOAT_EQ(v3.routing.routed_scaling_factor, 2.5f);
  EXPECT_TRUE(v3.routing.has_correction_bias);
  EXPECT_TRUE(v3.routing.renormalize);
  EXPECT_EQ(v3.quant, QuantMode::kFP8Block);

  const MoeConfig kimi = config_from_hf_json_file(fixture_path("kimi_k2"));
  EXPECT_EQ(kimi.name, "kimi_k2");
  EXPECT_EQ(kimi.num_experts, 384);
  EXPECT_EQ(kimi.routing.num_groups, 1);
  EXPECT_EQ(kimi.routing.topk_groups, 1);
  EXPECT_FLOAT_EQ(kimi.routing.routed_scaling_factor, 2.827f);

  const MoeConfig oss = config_from_hf_json_file(fixture_path("gpt_oss"));
  EXPECT_EQ(oss.hidden_size, 2880);
  EXPECT_EQ(oss.intermediate_size, 2880);
  EXPECT_EQ(oss.num_experts, 32);
  EXPECT_EQ(oss.top_k, 4);
  EXPECT_EQ(oss.activation, Activation::kSwiGLUOAI);
  EXPECT_FLOAT_EQ(oss.swiglu_oai.limit, 7.0f);
  EXPECT_FLOAT_EQ(oss.swiglu_oai.alpha, 1.702f);
  EXPECT_EQ(oss.routing.method, RoutingMethod::kGptOss);
  EXPECT_TRUE(oss.has_router_bias);
  EXPECT_TRUE(oss.has_expert_biases);
  EXPECT_EQ(oss.quant, QuantMode::kMXFP4);

  const MoeConfig scout = config_from_hf_json_file(fixture_path("llama4"));
  EXPECT_EQ(scout.name, "llama4");
  EXPECT_EQ(scout.hidden_size, 5120);        // text_config's, not vision_config's 1408
  EXPECT_EQ(scout.intermediate_size, 8192);  // not intermediate_size_mlp 16384
  EXPECT_EQ(scout.num_experts, 16);
  EXPECT_EQ(scout.top_k, 1);
  EXPECT_EQ(scout.num_shared_experts, 1);
  EXPECT_EQ(scout.shared_intermediate_size, 8192);
  EXPECT_TRUE(scout.apply_router_weight_on_input);
  EXPECT_EQ(scout.routing.method, RoutingMethod::kLlama4);
}

TEST(HfConfig, Llama4TextConfigOnItsOwn) {
  Json text = load_fixture("llama4")["text_config"];
  ASSERT_EQ(text["model_type"], "llama4_text");
  const MoeConfig c = parse(text);
  EXPECT_EQ(c.name, "llama4_text");
  expect_same_layer(c, preset("llama4-scout"));
}

TEST(HfConfig, DirectoryStandsForItsConfigJson) {
  const auto dir =
      std::filesystem::temp_directory_path() /
      ("moe_hf_config_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()));
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(fixture_path("qwen3_moe"), dir / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  const MoeConfig c = config_from_hf_json_file(dir.string());
  std::filesystem::remove_all(dir);
  EXPECT_EQ(c.name, "qwen3_moe");
  EXPECT_EQ(c.num_experts, 128);
}

// ---- Variants: dtype, quantization, optional keys ----------------------------------------

TEST(HfConfig, Float16GivesF16ActivationsAndWeights) {
  Json j = load_fixture("mixtral");
  j["torch_dtype"] = "float16";
  MoeConfig c = parse(j);
  EXPECT_EQ(c.act_dtype, DType::kF16);
  EXPECT_EQ(c.quant, QuantMode::kFP16);

  // The newer key name.
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  c = parse(j);
  EXPECT_EQ(c.act_dtype, DType::kF16);
  EXPECT_EQ(c.quant, QuantMode::kFP16);

  // A quantized checkpoint keeps its format; the activations follow the dtype.
  Json v3 = load_fixture("deepseek_v3");
  v3["torch_dtype"] = "float16";
  c = parse(v3);
  EXPECT_EQ(c.act_dtype, DType::kF16);
  EXPECT_EQ(c.quant, QuantMode::kFP8Block);

  // No dtype at all: bf16.
  j.erase("dtype");
  c = parse(j);
  EXPECT_EQ(c.act_dtype, DType::kBF16);
  EXPECT_EQ(c.quant, QuantMode::kBF16);
}

TEST(HfConfig, QuantizationConfigs) {
  Json j = load_fixture("qwen3_moe");

  j["quantization_config"] = {{"quant_method", "fp8"}, {"activation_scheme", "static"}};
  EXPECT_EQ(parse(j).quant, QuantMode::kFP8PerTensor);

  j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
  EXPECT_EQ(parse(j).quant, QuantMode::kFP8Block);

  j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", nullptr}};
  EXPECT_EQ(parse(j).quant, QuantMode::kFP8PerTensor);

  j["quantization_config"] = {{"quant_method", "mxfp4"}};
  EXPECT_EQ(parse(j).quant, QuantMode::kMXFP4);

  j["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}};
  EXPECT_EQ(parse(j).quant, QuantMode::kNVFP4);

  j["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "FP8"}};
  EXPECT_EQ(parse(j).quant, QuantMode::kFP8PerTensor);

  // Llama-4: the wrapper's quantization_config applies to the text model.
  Json scout = load_fixture("llama4");
  scout["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}};
  EXPECT_EQ(parse(scout).quant, QuantMode::kNVFP4);
}

TEST(HfConfig, OptionalKeysTakeTheModelsDefaults) {
  Json oss = load_fixture("gpt_oss");
  oss.erase("num_experts_per_tok");
  oss["experts_per_token"] = 2;  // the older name
  oss["swiglu_limit"] = 10.0;
  MoeConfig c = parse(oss);
  EXPECT_EQ(c.top_k, 2);
  EXPECT_FLOAT_EQ(c.swiglu_oai.limit, 10.0f);
  oss.erase("swiglu_limit");
  EXPECT_FLOAT_EQ(parse(oss).swiglu_oai.limit, 7.0f);

  Json qwen = load_fixture("qwen3_moe");
  qwen.erase("norm_topk_prob");
  EXPECT_FALSE(parse(qwen).routing.renormalize);  // Qwen3MoeConfig's default

  Json v3 = load_fixture("deepseek_v3");
  v3.erase("norm_topk_prob");
  v3.erase("scoring_func");
  v3.erase("topk_method");
  c = parse(v3);
  EXPECT_TRUE(c.routing.renormalize);
  EXPECT_TRUE(c.routing.has_correction_bias);

  Json v2 = load_fixture("deepseek_v2");
  v2["norm_topk_prob"] = true;
  v2["routed_scaling_factor"] = 16;  // an integer is a number too
  c = parse(v2);
  EXPECT_TRUE(c.routing.renormalize);
  EXPECT_FLOAT_EQ(c.routing.routed_scaling_factor, 16.0f);
  v2["n_shared_experts"] = nullptr;  // DeepseekV2Config's default: no shared experts
  c = parse(v2);
  EXPECT_EQ(c.num_shared_experts, 0);
  EXPECT_EQ(c.shared_intermediate_size, 0);
}

// ---- Errors ------------------------------------------------------------------------------

TEST(HfConfigErrors, MalformedJson) {
  expect_contains(
      error_of([] { config_from_hf_json_text("{\"model_type\": \"mixtral\",", "broken.json"); }),
      {"broken.json", "malformed JSON"});
  expect_contains(error_of([] { config_from_hf_json_text("[1, 2]", "array.json"); }),
                  {"array.json", "object", "array"});
  // Without a source the text is still named.
  expect_contains(error_of([] { config_from_hf_json_text("not json"); }), {"malformed JSON"});
}

TEST(HfConfigErrors, MissingFile) {
  expect_contains(error_of([] { config_from_hf_json_file("/no/such/dir/config.json"); }),
                  {"/no/such/dir/config.json"});
}

TEST(HfConfigErrors, MissingKeysAreNamedWithTheSource) {
  struct Case {
    std::string family, key;
  };
  const std::vector<Case> cases = {
      {"mixtral", "num_local_experts"},       {"mixtral", "hidden_size"},
      {"qwen3_moe", "moe_intermediate_size"}, {"olmoe", "num_experts"},
      {"deepseek_v2", "n_routed_experts"},    {"deepseek_v3", "n_group"},
      {"deepseek_v3", "topk_group"},          {"kimi_k2", "routed_scaling_factor"},
      {"gpt_oss", "intermediate_size"},       {"mixtral", "model_type"},
  };
  for (const auto& mc : cases) {
    SCOPED_TRACE(mc.family + " " + mc.key);
    Json j = load_fixture(mc.family);
    ASSERT_TRUE(j.contains(mc.key));
    j.erase(mc.key);
    expect_contains(error_of([&j] { parse(j); }), {"'" + mc.key + "'", "missing", "edited.json"});
  }

  // Keys of the text model are named by their path.
  Json scout = load_fixture("llama4");
  scout["text_config"].erase("num_local_experts");
  expect_contains(error_of([&scout] { parse(scout); }),
                  {"'text_config.num_local_experts'", "missing"});
  scout.erase("text_config");
  expect_contains(error_of([&scout] { parse(scout); }), {"'text_config'", "missing"});

  // GPT-OSS needs one of the two top-k keys.
  Json oss = load_fixture("gpt_oss");
  oss.erase("num_experts_per_tok");
  oss.erase("experts_per_token");
  expect_contains(error_of([&oss] { parse(oss); }), {"experts_per_token", "missing"});
}

TEST(HfConfigErrors, WrongTypes) {
  Json j = load_fixture("mixtral");
  j["num_local_experts"] = "8";
  expect_contains(error_of([&j] { parse(j); }),
                  {"'num_local_experts'", "an integer", "string", "edited.json"});

  j = load_fixture("mixtral");
  j["hidden_size"] = 4096.5;
  expect_contains(error_of([&j] { parse(j); }), {"'hidden_size'", "an integer", "4096.5"});

  j = load_fixture("mixtral");
  j["hidden_size"] = 10000000000LL;
  expect_contains(error_of([&j] { parse(j); }), {"'hidden_size'", "10000000000", "32-bit"});

  j = load_fixture("qwen3_moe");
  j["norm_topk_prob"] = 1;
  expect_contains(error_of([&j] { parse(j); }), {"'norm_topk_prob'", "a boolean", "number"});

  j = load_fixture("deepseek_v3");
  j["routed_scaling_factor"] = "2.5";
  expect_contains(error_of([&j] { parse(j); }), {"'routed_scaling_factor'", "a number"});

  j = load_fixture("mixtral");
  j["model_type"] = 7;
  expect_contains(error_of([&j] { parse(j); }), {"'model_type'", "a string"});

  j = load_fixture("llama4");
  j["text_config"] = "none";
  expect_contains(error_of([&j] { parse(j); }), {"'text_config'", "an object"});

  j = load_fixture("deepseek_v3");
  j["quantization_config"] = "fp8";
  expect_contains(error_of([&j] { parse(j); }), {"'quantization_config'", "an object"});
}

TEST(HfConfigErrors, UnknownModelTypeListsTheSupportedOnes) {
  Json j = load_fixture("mixtral");
  j["model_type"] = "llama";
  expect_contains(error_of([&j] { parse(j); }),
                  {"\"llama\"", "edited.json", "mixtral", "qwen3_moe", "olmoe", "deepseek_v2",
                   "deepseek_v3", "kimi_k2", "gpt_oss", "llama4", "llama4_text"});
}

TEST(HfConfigErrors, UnsupportedQuantization) {
  Json j = load_fixture("qwen3_moe");
  j["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}};
  expect_contains(error_of([&j] { parse(j); }),
                  {"'quantization_config.quant_method'", "\"gptq\"", "fp8", "mxfp4", "modelopt"});

  j["quantization_config"] = {{"quant_method", "compressed-tensors"}};
  expect_contains(error_of([&j] { parse(j); }), {"\"compressed-tensors\""});

  j["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "W4A8_AWQ"}};
  expect_contains(error_of([&j] { parse(j); }),
                  {"'quantization_config.quant_algo'", "\"W4A8_AWQ\"", "NVFP4", "FP8"});

  j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {64, 64}}};
  expect_contains(error_of([&j] { parse(j); }), {"weight_block_size", "[64,64]", "[128, 128]"});

  j["quantization_config"] = {{"bits", 4}};
  expect_contains(error_of([&j] { parse(j); }), {"'quantization_config.quant_method'", "missing"});
}

TEST(HfConfigErrors, UnsupportedRoutingOrDtype) {
  Json v2 = load_fixture("deepseek_v2");
  v2["topk_method"] = "group_limited_greedy";
  v2["n_group"] = 8;
  v2["topk_group"] = 3;
  expect_contains(error_of([&v2] { parse(v2); }),
                  {"'topk_method'", "group_limited_greedy", "not supported"});

  Json v3 = load_fixture("deepseek_v3");
  v3["scoring_func"] = "softmax";
  expect_contains(error_of([&v3] { parse(v3); }), {"'scoring_func'", "\"softmax\"", "sigmoid"});

  v3 = load_fixture("deepseek_v3");
  v3["topk_method"] = "greedy";
  expect_contains(error_of([&v3] { parse(v3); }), {"'topk_method'", "\"greedy\"", "noaux_tc"});

  Json j = load_fixture("mixtral");
  j["torch_dtype"] = "int8";
  expect_contains(error_of([&j] { parse(j); }), {"'torch_dtype'", "\"int8\"", "bfloat16"});
}

TEST(HfConfigErrors, InconsistentLayerFailsValidation) {
  Json j = load_fixture("mixtral");
  j["num_experts_per_tok"] = 9;
  expect_contains(error_of([&j] { parse(j); }), {"edited.json", "top_k = 9", "num_experts = 8"});

  j = load_fixture("deepseek_v3");
  j["n_group"] = 7;
  expect_contains(error_of([&j] { parse(j); }), {"edited.json", "routing.num_groups = 7"});

  j = load_fixture("llama4");
  j["text_config"]["num_experts_per_tok"] = 2;  // the weight on the input needs k == 1
  expect_contains(error_of([&j] { parse(j); }), {"apply_router_weight_on_input", "top_k = 2"});

  j = load_fixture("mixtral");
  j["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}};
  j["intermediate_size"] = 14344;  // multiple of 8, not of 16
  expect_contains(error_of([&j] { parse(j); }), {"intermediate_size = 14344", "nvfp4"});
}

}  // namespace
}  // namespace moe
