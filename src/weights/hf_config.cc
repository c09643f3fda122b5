// Hugging Face config.json -> MoeConfig (the shape and routing of one MoE layer).
//
// Contract (include/moe/config.h):
//   - The family is chosen by "model_type" from the table kFamilies below (written once);
//     "llama4" is the multimodal wrapper whose "text_config" holds the text model.
//   - Sizes and counts are read from the family's keys; flags a family may omit take the
//     defaults of the model's Hugging Face configuration class (noted where read).
//   - "torch_dtype" (or "dtype"): "bfloat16" -> act_dtype bf16; "float16" -> act_dtype f16
//     and, without a quantization_config, quant fp16; "float32" (e.g. OLMoE's fp32 master
//     weights) keeps bf16 activations and weights.
//   - "quantization_config": fp8 with weight_block_size [128, 128] -> fp8_block, fp8 without
//     a block size -> fp8_per_tensor, mxfp4 -> mxfp4, modelopt NVFP4 -> nvfp4, modelopt FP8 ->
//     fp8_per_tensor; anything else is an error naming it.
//   - name = model_type; max_num_tokens keeps its default.
//   - Every failure (malformed JSON, missing key, wrong type, unsupported value) is a
//     moe::Error naming the key and the source; the result passes MoeConfig::validate().
#include <array>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "moe/config.h"
#include "moe/errors.h"

namespace moe {
namespace {

using Json = nlohmann::json;

// Typed access to one JSON object of a config file. `prefix` is the path of the object
// inside the file ("" or "text_config."), so that messages name the full key.
class Reader {
 public:
  Reader(const Json& object, std::string source, std::string prefix)
      : object_(&object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  bool has(std::string_view key) const {
    auto it = object_->find(key);
    return it != object_->end() && !it->is_null();
  }

  /// A required integer that fits an int.
  int get_int(std::string_view key) const { return to_int(key, require(key)); }
  int get_int_or(std::string_view key, int fallback) const {
    return has(key) ? get_int(key) : fallback;
  }

  /// A required number (integer or float).
  double get_number(std::string_view key) const {
    const Json& v = require(key);
    check_type(key, v, v.is_number(), "a number");
    return v.get<double>();
  }
  double get_number_or(std::string_view key, double fallback) const {
    return has(key) ? get_number(key) : fallback;
  }

  bool get_bool_or(std::string_view key, bool fallback) const {
    if (!has(key)) return fallback;
    const Json& v = object_->at(key);
    check_type(key, v, v.is_boolean(), "a boolean");
    return v.get<bool>();
  }

  std::string get_string(std::string_view key) const {
    const Json& v = require(key);
    check_type(key, v, v.is_string(), "a string");
    return v.get<std::string>();
  }
  std::optional<std::string> get_string_opt(std::string_view key) const {
    if (!has(key)) return std::nullopt;
    return get_string(key);
  }

  /// A nested object, or nullopt when absent.
  std::optional<Reader> get_object_opt(std::string_view key) const {
    if (!has(key)) return std::nullopt;
    const Json& v = object_->at(key);
    check_type(key, v, v.is_object(), "an object");
    return Reader(v, source_, prefix_ + std::string(key) + ".");
  }
  Reader get_object(std::string_view key) const {
    require(key);
    return *get_object_opt(key);
  }

  const Json& raw(std::string_view key) const { return require(key); }

  /// The full name of `key`, for messages.
  std::string key_name(std::string_view key) const { return prefix_ + std::string(key); }

  [[noreturn]] void fail(std::string_view key, const std::string& why) const {
    MOE_THROW("config.json ", source_, ": key '", key_name(key), "' ", why);
  }

  int to_int(std::string_view key, const Json& v) const {
    check_type(key, v, v.is_number_integer(), "an integer");
    const int64_t value = v.get<int64_t>();
    if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
      fail(key, "= " + std::to_string(value) + " does not fit a 32-bit int");
    }
    return static_cast<int>(value);
  }

 private:
  const Json& require(std::string_view key) const {
    if (!has(key)) fail(key, "is missing");
    return object_->at(key);
  }

  void check_type(std::string_view key, const Json& v, bool ok, const char* expected) const {
    if (!ok)
      fail(key, std::string("must be ") + expected + ", got " + v.type_name() + " " + v.dump());
  }

  const Json* object_;  // not owned
  std::string source_;
  std::string prefix_;
};

// ---- Families ----------------------------------------------------------------------------

void read_mixtral(const Reader& r, MoeConfig& c) {
  c.num_experts = r.get_int("num_local_experts");
  c.top_k = r.get_int("num_experts_per_tok");
  c.intermediate_size = r.get_int("intermediate_size");
  c.routing.renormalize = true;  // Mixtral always renormalizes the top-k
}

void read_qwen3_moe(const Reader& r, MoeConfig& c) {
  c.num_experts = r.get_int("num_experts");
  c.top_k = r.get_int("num_experts_per_tok");
  c.intermediate_size = r.get_int("moe_intermediate_size");
  c.routing.renormalize = r.get_bool_or("norm_topk_prob", false);  // Qwen3MoeConfig default
}

void read_olmoe(const Reader& r, MoeConfig& c) {
  c.num_experts = r.get_int("num_experts");
  c.top_k = r.get_int("num_experts_per_tok");
  c.intermediate_size = r.get_int("intermediate_size");
  c.routing.renormalize = r.get_bool_or("norm_topk_prob", false);  // OlmoeConfig default
}

// Routed and shared experts of the DeepSeek family.
void read_deepseek_experts(const Reader& r, MoeConfig& c) {
  c.num_experts = r.get_int("n_routed_experts");
  c.top_k = r.get_int("num_experts_per_tok");
  c.intermediate_size = r.get_int("moe_intermediate_size");
  c.num_shared_experts = r.get_int_or("n_shared_experts", 0);
  if (c.num_shared_experts < 0) {
    r.fail("n_shared_experts", "= " + std::to_string(c.num_shared_experts) + " must be >= 0");
  }
  c.shared_intermediate_size = c.num_shared_experts * c.intermediate_size;
}

void read_deepseek_v2(const Reader& r, MoeConfig& c) {
  read_deepseek_experts(r, c);
  const std::string method = r.get_string_opt("topk_method").value_or("greedy");
  if (method == "group_limited_greedy") {
    r.fail("topk_method",
           "= \"group_limited_greedy\" (softmax scoring with group limits, DeepSeek-V2) is not "
           "supported; supported: \"greedy\"");
  }
  if (method != "greedy")
    r.fail("topk_method", "= \"" + method + "\" is not supported; supported: \"greedy\"");
  const std::string scoring = r.get_string_opt("scoring_func").value_or("softmax");
  if (scoring != "softmax") {
    r.fail("scoring_func", "= \"" + scoring +
                               "\" is not supported with topk_method greedy; "
                               "supported: \"softmax\"");
  }
  c.routing.method = RoutingMethod::kSoftmaxTopK;
  c.routing.renormalize = r.get_bool_or("norm_topk_prob", false);  // DeepseekV2Config default
  c.routing.routed_scaling_factor =
      static_cast<float>(r.get_number_or("routed_scaling_factor", 1.0));
}

void read_deepseek_v3(const Reader& r, MoeConfig& c) {
  read_deepseek_experts(r, c);
  const std::string scoring = r.get_string_opt("scoring_func").value_or("sigmoid");
  if (scoring != "sigmoid") {
    r.fail("scoring_func", "= \"" + scoring + "\" is not supported; supported: \"sigmoid\"");
  }
  const std::string method = r.get_string_opt("topk_method").value_or("noaux_tc");
  if (method != "noaux_tc") {
    r.fail("topk_method", "= \"" + method + "\" is not supported; supported: \"noaux_tc\"");
  }
  c.routing.method = RoutingMethod::kDeepSeekV3;
  c.routing.num_groups = r.get_int("n_group");
  c.routing.topk_groups = r.get_int("topk_group");
  c.routing.routed_scaling_factor = static_cast<float>(r.get_number("routed_scaling_factor"));
  c.routing.renormalize = r.get_bool_or("norm_topk_prob", true);  // DeepseekV3Config default
  c.routing.has_correction_bias = true;  // noaux_tc: e_score_correction_bias
}

void read_gpt_oss(const Reader& r, MoeConfig& c) {
  c.num_experts = r.get_int("num_local_experts");
  // Older files name top-k "experts_per_token".
  if (r.has("num_experts_per_tok")) {
    c.top_k = r.get_int("num_experts_per_tok");
  } else if (r.has("experts_per_token")) {
    c.top_k = r.get_int("experts_per_token");
  } else {
    r.fail("num_experts_per_tok", "is missing (and so is 'experts_per_token')");
  }
  c.intermediate_size = r.get_int("intermediate_size");
  c.activation = Activation::kSwiGLUOAI;
  c.swiglu_oai.alpha = 1.702f;  // fixed in the reference code, not in config.json
  c.swiglu_oai.limit = static_cast<float>(r.get_number_or("swiglu_limit", 7.0));
  c.routing.method = RoutingMethod::kGptOss;
  c.has_router_bias = true;
  c.has_expert_biases = true;
}

void read_llama4_text(const Reader& r, MoeConfig& c) {
  c.num_experts = r.get_int("num_local_experts");
  c.top_k = r.get_int("num_experts_per_tok");
  // NOTE: intermediate_size is the expert's (and the shared expert's) size;
  // intermediate_size_mlp is the dense layers' and does not concern the MoE layer.
  c.intermediate_size = r.get_int("intermediate_size");
  c.routing.method = RoutingMethod::kLlama4;
  c.routing.renormalize = false;
  c.apply_router_weight_on_input = true;
  c.num_shared_experts = 1;
  c.shared_intermediate_size = c.intermediate_size;
}

struct Family {
  std::string_view model_type;
  void (*read)(const Reader&, MoeConfig&);
  /// A multimodal wrapper: the text model's keys are in this nested object.
  std::string_view text_config = {};
};

// The supported model types, written once.
constexpr std::array<Family, 9> kFamilies = {{
    {"mixtral", read_mixtral},
    {"qwen3_moe", read_qwen3_moe},
    {"olmoe", read_olmoe},
    {"deepseek_v2", read_deepseek_v2},
    {"deepseek_v3", read_deepseek_v3},
    {"kimi_k2", read_deepseek_v3},
    {"gpt_oss", read_gpt_oss},
    {"llama4", read_llama4_text, "text_config"},
    {"llama4_text", read_llama4_text},
}};

const Family& find_family(const Reader& r, const std::string& model_type) {
  std::string known;
  for (const auto& f : kFamilies) {
    if (f.model_type == model_type) return f;
    known += (known.empty() ? "" : ", ") + std::string(f.model_type);
  }
  r.fail("model_type", "= \"" + model_type + "\" is not supported (supported: " + known + ")");
}

// ---- Element type and quantization -------------------------------------------------------

// torch_dtype (or its newer name dtype) -> act_dtype; returns whether the weights are f16.
bool read_dtype(const Reader& r, MoeConfig& c) {
  const char* key = r.has("torch_dtype") ? "torch_dtype" : "dtype";
  const std::optional<std::string> dtype = r.get_string_opt(key);
  if (!dtype || *dtype == "bfloat16" || *dtype == "float32") {
    c.act_dtype = DType::kBF16;
    return false;
  }
  if (*dtype == "float16") {
    c.act_dtype = DType::kF16;
    return true;
  }
  r.fail(key, "= \"" + *dtype + "\" is not supported (supported: bfloat16, float16, float32)");
}

QuantMode read_quantization(const Reader& q) {
  const std::string method = q.get_string("quant_method");
  if (method == "fp8") {
    if (!q.has("weight_block_size")) return QuantMode::kFP8PerTensor;
    const Json& block = q.raw("weight_block_size");
    const bool is_128x128 = block.is_array() && block.size() == 2 && block[0].is_number_integer() &&
                            block[1].is_number_integer() && block[0].get<int64_t>() == 128 &&
                            block[1].get<int64_t>() == 128;
    if (!is_128x128) {
      q.fail("weight_block_size",
             "= " + block.dump() + " is not supported (supported: [128, 128])");
    }
    return QuantMode::kFP8Block;
  }
  if (method == "mxfp4") return QuantMode::kMXFP4;
  if (method == "modelopt") {
    const std::string algo = q.get_string("quant_algo");
    if (algo == "NVFP4") return QuantMode::kNVFP4;
    if (algo == "FP8") return QuantMode::kFP8PerTensor;
    q.fail("quant_algo", "= \"" + algo + "\" is not supported (supported: NVFP4, FP8)");
  }
  q.fail("quant_method", "= \"" + method + "\" is not supported (supported: fp8, mxfp4, modelopt)");
}

MoeConfig parse_root(const Json& root, const std::string& source) {
  const Reader probe(root, source, "");
  const std::string model_type = probe.get_string("model_type");
  const Family& family = find_family(probe, model_type);
  // From here on, messages also name the model type.
  const Reader top(root, source + " (model_type " + model_type + ")", "");

  // A multimodal wrapper (Llama-4) keeps the text model in a nested object.
  std::optional<Reader> text;
  if (!family.text_config.empty()) text = top.get_object(family.text_config);
  const Reader& r = text ? *text : top;

  MoeConfig c;
  c.name = model_type;
  c.hidden_size = r.get_int("hidden_size");
  family.read(r, c);

  // dtype: the text model's own first, then the file's.
  const bool has_dtype = r.has("torch_dtype") || r.has("dtype");
  const bool f16_weights = read_dtype(has_dtype ? r : top, c);

  std::optional<Reader> quant = top.get_object_opt("quantization_config");
  if (!quant && text) quant = text->get_object_opt("quantization_config");
  if (quant) {
    c.quant = read_quantization(*quant);
  } else {
    c.quant = f16_weights ? QuantMode::kFP16 : QuantMode::kBF16;
  }

  try {
    c.validate();
  } catch (const Error& e) {
    MOE_THROW("config.json ", source, ": the layer read is not valid: ", e.message());
  }
  return c;
}

}  // namespace

MoeConfig config_from_hf_json_text(std::string_view json_text, std::string_view source) {
  const std::string name = source.empty() ? std::string("<text>") : std::string(source);
  Json root;
  try {
    root = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::parse_error& e) {
    MOE_THROW("config.json ", name, ": malformed JSON: ", e.what());
  }
  MOE_CHECK(root.is_object(), "config.json ", name, ": the top level must be an object, got ",
            root.type_name());
  return parse_root(root, name);
}

MoeConfig config_from_hf_json_file(const std::string& path) {
  // A checkpoint directory stands for the config.json inside it.
  std::filesystem::path file(path);
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) file /= "config.json";
  std::ifstream in(file, std::ios::binary);
  MOE_CHECK(in.good(), "cannot open config.json '", file.string(), "'");
  std::ostringstream text;
  text << in.rdbuf();
  MOE_CHECK(!in.bad(), "cannot read config.json '", file.string(), "'");
  return config_from_hf_json_text(text.str(), file.string());
}

}  // namespace moe
