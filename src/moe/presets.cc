// Built-in model presets: the MoE layer of each model in ../shared/facts/models.md.
//
// Contract (include/moe/config.h):
//   - preset_names() lists the presets in the order of the table below (written once).
//   - preset(name) returns that model's layer with bf16 weights and activations and
//     max_num_tokens 8192 (a checkpoint's quantization decides otherwise when one is
//     loaded); throws moe::Error listing the known names.
//   - Every preset passes MoeConfig::validate().
#include <array>
#include <string>

#include "moe/config.h"
#include "moe/errors.h"

namespace moe {
namespace {

// The fields every preset sets; the rest keep MoeConfig's defaults (SwiGLU, softmax-topk
// with renormalization, no shared experts, no biases, bf16).
MoeConfig base(std::string_view name, int num_experts, int top_k, int hidden_size,
               int intermediate_size) {
  MoeConfig c;
  c.name = std::string(name);
  c.num_experts = num_experts;
  c.top_k = top_k;
  c.hidden_size = hidden_size;
  c.intermediate_size = intermediate_size;
  c.quant = QuantMode::kBF16;
  c.act_dtype = DType::kBF16;
  c.max_num_tokens = 8192;
  return c;
}

MoeConfig mixtral(std::string_view name, int hidden_size, int intermediate_size) {
  return base(name, 8, 2, hidden_size, intermediate_size);
}

MoeConfig qwen3(std::string_view name, int hidden_size, int intermediate_size) {
  return base(name, 128, 8, hidden_size, intermediate_size);  // norm_topk_prob = true
}

MoeConfig olmoe(std::string_view name) {
  MoeConfig c = base(name, 64, 8, 2048, 1024);
  c.routing.renormalize = false;  // norm_topk_prob = false
  return c;
}

MoeConfig deepseek_v2_lite(std::string_view name) {
  MoeConfig c = base(name, 64, 6, 2048, 1408);
  c.routing.method = RoutingMethod::kSoftmaxTopK;  // topk_method "greedy"
  c.routing.renormalize = false;
  c.routing.routed_scaling_factor = 1.0f;
  c.num_shared_experts = 2;
  c.shared_intermediate_size = 2 * 1408;
  return c;
}

MoeConfig deepseek_v3_style(std::string_view name, int num_experts, int num_groups, int topk_groups,
                            float routed_scaling_factor) {
  MoeConfig c = base(name, num_experts, 8, 7168, 2048);
  c.routing.method = RoutingMethod::kDeepSeekV3;
  c.routing.renormalize = true;  // norm_topk_prob = true
  c.routing.num_groups = num_groups;
  c.routing.topk_groups = topk_groups;
  c.routing.routed_scaling_factor = routed_scaling_factor;
  c.routing.has_correction_bias = true;  // topk_method "noaux_tc"
  c.num_shared_experts = 1;
  c.shared_intermediate_size = 2048;
  return c;
}

MoeConfig gpt_oss(std::string_view name, int num_experts) {
  MoeConfig c = base(name, num_experts, 4, 2880, 2880);
  c.activation = Activation::kSwiGLUOAI;
  c.swiglu_oai = {.alpha = 1.702f, .limit = 7.0f};
  c.routing.method = RoutingMethod::kGptOss;
  // NOTE: kGptOss does not read `renormalize`; a softmax over the k selected logits is the
  // renormalized softmax, which true describes.
  c.routing.renormalize = true;
  c.has_router_bias = true;
  c.has_expert_biases = true;
  return c;
}

MoeConfig llama4(std::string_view name, int num_experts) {
  MoeConfig c = base(name, num_experts, 1, 5120, 8192);
  c.routing.method = RoutingMethod::kLlama4;
  c.routing.renormalize = false;  // the weight is sigmoid(logit), not normalized
  c.apply_router_weight_on_input = true;
  c.num_shared_experts = 1;
  c.shared_intermediate_size = 8192;
  return c;
}

struct Preset {
  std::string_view name;
  MoeConfig (*make)(std::string_view name);
};

// The list of presets, written once.
const std::array<Preset, 12> kPresets = {{
    {"mixtral-8x7b", [](std::string_view n) { return mixtral(n, 4096, 14336); }},
    {"mixtral-8x22b", [](std::string_view n) { return mixtral(n, 6144, 16384); }},
    {"qwen3-30b-a3b", [](std::string_view n) { return qwen3(n, 2048, 768); }},
    {"qwen3-235b-a22b", [](std::string_view n) { return qwen3(n, 4096, 1536); }},
    {"olmoe-1b-7b", olmoe},
    {"deepseek-v2-lite", deepseek_v2_lite},
    {"deepseek-v3", [](std::string_view n) { return deepseek_v3_style(n, 256, 8, 4, 2.5f); }},
    {"kimi-k2", [](std::string_view n) { return deepseek_v3_style(n, 384, 1, 1, 2.827f); }},
    {"gpt-oss-20b", [](std::string_view n) { return gpt_oss(n, 32); }},
    {"gpt-oss-120b", [](std::string_view n) { return gpt_oss(n, 128); }},
    {"llama4-scout", [](std::string_view n) { return llama4(n, 16); }},
    {"llama4-maverick", [](std::string_view n) { return llama4(n, 128); }},
}};

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.emplace_back(p.name);
  return names;
}

MoeConfig preset(std::string_view name) {
  std::string known;
  for (const auto& p : kPresets) {
    if (p.name == name) return p.make(p.name);
    known += (known.empty() ? "" : ", ") + std::string(p.name);
  }
  MOE_THROW("unknown preset '", name, "' (known: ", known, ")");
}

}  // namespace moe
