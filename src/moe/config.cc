// MoeConfig and Mapping: names of the enums, their parsers, validation and the summary.
//
// Contract (include/moe/config.h):
//   - activation_name / routing_method_name / quant_mode_name map each enum value to one
//     lower-case name; parse_* are their exact inverses and throw moe::Error listing the
//     accepted names. Each list of names is written once, in the tables below.
//   - MoeConfig::validate() throws moe::Error naming the first inconsistent field, its value
//     and the rule it breaks; Mapping::validate() does the same for the rank layout.
//   - MoeConfig::summary() is a few aligned "label  value" lines for reports.
#include <array>
#include <cmath>
#include <sstream>
#include <string>

#include "moe/config.h"
#include "moe/errors.h"

namespace moe {
namespace {

template <class Enum>
struct NamedValue {
  Enum value;
  std::string_view name;
};

constexpr std::array<NamedValue<Activation>, 2> kActivations = {{
    {Activation::kSwiGLU, "swiglu"},
    {Activation::kSwiGLUOAI, "swiglu_oai"},
}};

constexpr std::array<NamedValue<RoutingMethod>, 4> kRoutingMethods = {{
    {RoutingMethod::kSoftmaxTopK, "softmax_topk"},
    {RoutingMethod::kDeepSeekV3, "deepseek_v3"},
    {RoutingMethod::kLlama4, "llama4"},
    {RoutingMethod::kGptOss, "gpt_oss"},
}};

constexpr std::array<NamedValue<QuantMode>, 7> kQuantModes = {{
    {QuantMode::kBF16, "bf16"},
    {QuantMode::kFP16, "fp16"},
    {QuantMode::kFP8PerTensor, "fp8_per_tensor"},
    {QuantMode::kFP8Block, "fp8_block"},
    {QuantMode::kNVFP4, "nvfp4"},
    {QuantMode::kMXFP4, "mxfp4"},
    {QuantMode::kW4A8MXFP4MXFP8, "w4a8_mxfp4_mxfp8"},
}};

template <class Enum, size_t N>
std::string_view name_in(const std::array<NamedValue<Enum>, N>& table, Enum value,
                         std::string_view what) {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  MOE_UNREACHABLE(what, " code ", static_cast<int>(value));
}

template <class Enum, size_t N>
Enum parse_in(const std::array<NamedValue<Enum>, N>& table, std::string_view name,
              std::string_view what) {
  std::string known;
  for (const auto& entry : table) {
    if (entry.name == name) return entry.value;
    known += (known.empty() ? "" : ", ") + std::string(entry.name);
  }
  MOE_THROW("unknown ", what, " '", name, "' (accepted: ", known, ")");
}

// The block size along K of the quantized weight formats (1 where any size works).
int weight_block_size(QuantMode quant) {
  switch (quant) {
    case QuantMode::kNVFP4:
      return 16;
    case QuantMode::kMXFP4:
    case QuantMode::kW4A8MXFP4MXFP8:
      return 32;
    default:
      return 1;
  }
}

}  // namespace

std::string_view activation_name(Activation a) { return name_in(kActivations, a, "activation"); }

std::string_view routing_method_name(RoutingMethod m) {
  return name_in(kRoutingMethods, m, "routing method");
}

std::string_view quant_mode_name(QuantMode q) { return name_in(kQuantModes, q, "quant mode"); }

Activation parse_activation(std::string_view name) {
  return parse_in(kActivations, name, "activation");
}

RoutingMethod parse_routing_method(std::string_view name) {
  return parse_in(kRoutingMethods, name, "routing method");
}

QuantMode parse_quant_mode(std::string_view name) {
  return parse_in(kQuantModes, name, "quant mode");
}

std::vector<QuantMode> all_quant_modes() {
  std::vector<QuantMode> modes;
  for (const auto& entry : kQuantModes) modes.push_back(entry.value);
  return modes;
}

void MoeConfig::validate() const {
  // Every message starts with the config's name so that a failing preset or file is found.
  const std::string where = "MoeConfig '" + name + "': ";
  MOE_CHECK(num_experts > 0, where, "num_experts = ", num_experts, " must be > 0");
  MOE_CHECK(top_k > 0 && top_k <= num_experts, where, "top_k = ", top_k,
            " must be in [1, num_experts = ", num_experts, "]");
  MOE_CHECK(hidden_size > 0, where, "hidden_size = ", hidden_size, " must be > 0");
  MOE_CHECK(intermediate_size > 0, where, "intermediate_size = ", intermediate_size,
            " must be > 0");
  MOE_CHECK(max_num_tokens > 0, where, "max_num_tokens = ", max_num_tokens, " must be > 0");

  // Routing.
  const RoutingConfig& r = routing;
  const std::string_view method = routing_method_name(r.method);
  if (r.method == RoutingMethod::kDeepSeekV3) {
    MOE_CHECK(r.num_groups >= 1 && num_experts % r.num_groups == 0, where,
              "routing.num_groups = ", r.num_groups,
              " must be >= 1 and divide num_experts = ", num_experts);
    MOE_CHECK(r.topk_groups >= 1 && r.topk_groups <= r.num_groups, where,
              "routing.topk_groups = ", r.topk_groups,
              " must be in [1, routing.num_groups = ", r.num_groups, "]");
    const int group_size = num_experts / r.num_groups;
    MOE_CHECK(top_k <= r.topk_groups * group_size, where, "top_k = ", top_k,
              " exceeds the experts of the kept groups (routing.topk_groups = ", r.topk_groups,
              " x group size ", group_size, ")");
    // NOTE: with a correction bias a group scores as the sum of its 2 best experts.
    MOE_CHECK(!r.has_correction_bias || group_size >= 2, where, "group size ", group_size,
              " (num_experts ", num_experts, " / routing.num_groups ", r.num_groups,
              ") must be >= 2 with routing.has_correction_bias (groups score their top-2 sum)");
  } else {
    MOE_CHECK(r.num_groups == 1, where, "routing.num_groups = ", r.num_groups,
              " must be 1 for routing method ", method, " (groups are deepseek_v3 only)");
    MOE_CHECK(r.topk_groups == 1, where, "routing.topk_groups = ", r.topk_groups,
              " must be 1 for routing method ", method, " (groups are deepseek_v3 only)");
    MOE_CHECK(!r.has_correction_bias, where,
              "routing.has_correction_bias = true needs routing method deepseek_v3, not ", method);
  }
  MOE_CHECK(std::isfinite(r.routed_scaling_factor) && r.routed_scaling_factor > 0.0f, where,
            "routing.routed_scaling_factor = ", r.routed_scaling_factor, " must be finite and > 0");
  MOE_CHECK(!apply_router_weight_on_input || top_k == 1, where,
            "apply_router_weight_on_input needs top_k == 1, got top_k = ", top_k);

  // Activation.
  if (activation == Activation::kSwiGLUOAI) {
    MOE_CHECK(swiglu_oai.limit > 0.0f, where, "swiglu_oai.limit = ", swiglu_oai.limit,
              " must be > 0");
    MOE_CHECK(std::isfinite(swiglu_oai.alpha), where, "swiglu_oai.alpha = ", swiglu_oai.alpha,
              " must be finite");
  }

  // Shared experts: both counts are set or neither.
  MOE_CHECK(num_shared_experts >= 0 && shared_intermediate_size >= 0, where,
            "num_shared_experts = ", num_shared_experts,
            " and shared_intermediate_size = ", shared_intermediate_size, " must be >= 0");
  MOE_CHECK((num_shared_experts > 0) == (shared_intermediate_size > 0), where,
            "num_shared_experts = ", num_shared_experts,
            " and shared_intermediate_size = ", shared_intermediate_size,
            " must both be > 0 or both be 0");

  // Element types and quantization.
  MOE_CHECK(act_dtype == DType::kBF16 || act_dtype == DType::kF16, where,
            "act_dtype = ", dtype_name(act_dtype), " must be bf16 or f16");
  MOE_CHECK(ep_partial_dtype == DType::kF32 || ep_partial_dtype == act_dtype, where,
            "ep_partial_dtype = ", dtype_name(ep_partial_dtype), " must be f32 or act_dtype (",
            dtype_name(act_dtype), ")");
  const std::string_view quant_name = quant_mode_name(quant);
  MOE_CHECK(quant != QuantMode::kFP16 || act_dtype == DType::kF16, where, "quant ", quant_name,
            " needs act_dtype f16, got ", dtype_name(act_dtype));
  if (const int block = weight_block_size(quant); block > 1) {
    MOE_CHECK(hidden_size % block == 0, where, "hidden_size = ", hidden_size,
              " must be a multiple of ", block, " for quant ", quant_name);
    MOE_CHECK(intermediate_size % block == 0, where, "intermediate_size = ", intermediate_size,
              " must be a multiple of ", block, " for quant ", quant_name);
    MOE_CHECK(shared_intermediate_size % block == 0, where,
              "shared_intermediate_size = ", shared_intermediate_size, " must be a multiple of ",
              block, " for quant ", quant_name);
  }
}

std::string MoeConfig::summary() const {
  std::ostringstream os;
  auto line = [&os](std::string_view label, const std::string& value) {
    os << label << std::string(label.size() < 16 ? 16 - label.size() : 1, ' ') << value << "\n";
  };
  auto str = [](auto value) {
    std::ostringstream s;
    s << value;
    return s.str();
  };

  line("name", name.empty() ? "(unnamed)" : name);
  line("experts", str(num_experts) + ", top-k " + str(top_k));
  line("hidden", str(hidden_size) + ", intermediate " + str(intermediate_size));

  std::string act(activation_name(activation));
  if (activation == Activation::kSwiGLUOAI) {
    act += " (alpha " + str(swiglu_oai.alpha) + ", limit " + str(swiglu_oai.limit) + ")";
  }
  line("activation", act);

  std::string route(routing_method_name(routing.method));
  switch (routing.method) {
    case RoutingMethod::kSoftmaxTopK:
      route += routing.renormalize ? " (renormalize" : " (no renormalize";
      break;
    case RoutingMethod::kDeepSeekV3:
      route += " (groups " + str(routing.num_groups) + ", keep " + str(routing.topk_groups) +
               (routing.renormalize ? ", renormalize" : ", no renormalize") +
               (routing.has_correction_bias ? ", correction bias" : "");
      break;
    case RoutingMethod::kLlama4:
      route += " (sigmoid of the top logit";
      break;
    case RoutingMethod::kGptOss:
      route += " (softmax over the top-k logits";
      break;
  }
  route += ", scale " + str(routing.routed_scaling_factor) + ")";
  if (apply_router_weight_on_input) route += ", weight on input";
  line("routing", route);

  line("shared experts", num_shared_experts == 0 ? std::string("none")
                                                 : str(num_shared_experts) + " (intermediate " +
                                                       str(shared_intermediate_size) + " in all)");
  std::string biases;
  if (has_router_bias) biases = "router";
  if (has_expert_biases) biases += biases.empty() ? "experts" : ", experts";
  line("biases", biases.empty() ? "none" : biases);
  line("quant", std::string(quant_mode_name(quant)));
  line("act dtype", std::string(dtype_name(act_dtype)));
  line("max tokens", str(max_num_tokens));
  line("ep partials", std::string(dtype_name(ep_partial_dtype)));
  return os.str();
}

void Mapping::validate() const {
  MOE_CHECK(ep_size >= 1, "Mapping: ep_size = ", ep_size, " must be >= 1");
  MOE_CHECK(ep_rank >= 0 && ep_rank < ep_size, "Mapping: ep_rank = ", ep_rank,
            " must be in [0, ep_size = ", ep_size, ")");
}

}  // namespace moe
