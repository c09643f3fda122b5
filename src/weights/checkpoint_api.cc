// The public checkpoint API (include/moe/checkpoint.h): forwarding to CheckpointSource and
// the discovery functions of checkpoint_source.h, and a writer of one MoE layer.
//
// The writer's contract:
//   - config.json: the Hugging Face model type whose routing is the layer's (softmax top-k:
//     qwen3_moe, or deepseek_v2 when the layer has shared experts or a routed scaling factor;
//     DeepSeek-V3 routing: deepseek_v3), torch_dtype from act_dtype and a quantization_config
//     for the quantized modes (fp8 with or without weight_block_size, modelopt NVFP4, mxfp4).
//   - model.safetensors: every tensor the source has for the layer, under the standard family's
//     names (weight_scale_inv for fp8_block scales), in the source's checkpoint format.
//   - The written layer is read back with checkpoint_layer_config: any field that differs
//     from `config` is an error naming it (what config.json cannot express).
#include "moe/checkpoint.h"

#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/errors.h"
#include "weights/checkpoint_source.h"
#include "weights/safetensors.h"

namespace moe {

std::vector<int> checkpoint_moe_layers(const std::string& path) {
  auto ckpt = SafetensorsCheckpoint::open(path);
  std::vector<int> layers;
  for (const MoeLayerInfo& info : list_moe_layers(*ckpt)) layers.push_back(info.layer);
  return layers;
}

CheckpointLayer open_checkpoint_layer(const std::string& path, const MoeConfig& config, int layer) {
  auto source = CheckpointSource::open(path, config, layer);
  const LoadMode mode = source->natural_load_mode();
  return {std::move(source), mode};
}

namespace {

using Json = nlohmann::json;

// config.json of a layer (see the file comment); throws naming what cannot be expressed.
Json hf_config_json(const MoeConfig& c, int layer) {
  const auto unsupported = [&](const char* what) {
    MOE_THROW("save_checkpoint_layer: layer '", c.name, "' has ", what,
              ", which the writer's config.json (qwen3_moe, deepseek_v2, deepseek_v3) cannot "
              "express");
  };
  if (c.activation != Activation::kSwiGLU) unsupported("activation swiglu_oai");
  if (c.has_router_bias) unsupported("a router bias");
  if (c.has_expert_biases) unsupported("expert biases");
  if (c.apply_router_weight_on_input) unsupported("the routing weight on the expert input");
  Json j;
  j["hidden_size"] = c.hidden_size;
  j["num_experts_per_tok"] = c.top_k;
  j["moe_intermediate_size"] = c.intermediate_size;
  j["norm_topk_prob"] = c.routing.renormalize;
  j["num_hidden_layers"] = layer + 1;
  j["torch_dtype"] = c.act_dtype == DType::kF16 ? "float16" : "bfloat16";
  const auto deepseek_experts = [&] {
    j["n_routed_experts"] = c.num_experts;
    j["n_shared_experts"] = c.num_shared_experts;
    j["routed_scaling_factor"] = c.routing.routed_scaling_factor;
  };
  switch (c.routing.method) {
    case RoutingMethod::kSoftmaxTopK:
      if (c.num_shared_experts == 0 && c.routing.routed_scaling_factor == 1.0f) {
        j["model_type"] = "qwen3_moe";
        j["architectures"] = {"Qwen3MoeForCausalLM"};
        j["num_experts"] = c.num_experts;
        j["decoder_sparse_step"] = 1;
        j["mlp_only_layers"] = Json::array();
      } else {
        j["model_type"] = "deepseek_v2";
        j["architectures"] = {"DeepseekV2ForCausalLM"};
        j["topk_method"] = "greedy";
        j["scoring_func"] = "softmax";
        deepseek_experts();
      }
      break;
    case RoutingMethod::kDeepSeekV3:
      j["model_type"] = "deepseek_v3";
      j["architectures"] = {"DeepseekV3ForCausalLM"};
      j["topk_method"] = "noaux_tc";
      j["scoring_func"] = "sigmoid";
      j["n_group"] = c.routing.num_groups;
      j["topk_group"] = c.routing.topk_groups;
      deepseek_experts();
      break;
    default:
      unsupported(("routing " + std::string(routing_method_name(c.routing.method))).c_str());
  }
  switch (c.quant) {
    case QuantMode::kBF16:
    case QuantMode::kFP16:
      break;
    case QuantMode::kFP8Block:
      j["quantization_config"] = {{"quant_method", "fp8"},
                                  {"fmt", "e4m3"},
                                  {"activation_scheme", "dynamic"},
                                  {"weight_block_size", {128, 128}}};
      break;
    case QuantMode::kFP8PerTensor:
      j["quantization_config"] = {{"quant_method", "fp8"}, {"activation_scheme", "static"}};
      break;
    case QuantMode::kNVFP4:
      j["quantization_config"] = {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"}};
      break;
    case QuantMode::kMXFP4:
      j["quantization_config"] = {{"quant_method", "mxfp4"}};
      break;
    default:
      unsupported(("quant " + std::string(quant_mode_name(c.quant))).c_str());
  }
  return j;
}

// Tensors to write, with copies of their bytes (a source's views live until its next call).
class TensorList {
 public:
  void add(const std::string& name, const TensorView& t) {
    if (t.empty()) return;
    MOE_CHECK(t.device().is_cpu() && t.is_contiguous(), "save_checkpoint_layer: tensor '", name,
              "' must be a contiguous host tensor, got ", t.str());
    Tensor copy = Tensor::empty(t.shape(), t.dtype());
    std::memcpy(copy.data(), t.data(), t.nbytes());
    owned_.push_back(std::move(copy));
    entries_.push_back(st_write_tensor(name, owned_.back()));
  }
  const std::vector<StWriteTensor>& entries() const { return entries_; }

 private:
  std::deque<Tensor> owned_;
  std::vector<StWriteTensor> entries_;
};

// The first field of `got` that differs from `want`, or "".
std::string first_difference(const MoeConfig& want, const MoeConfig& got) {
  const std::pair<const char*, bool> fields[] = {
      {"num_experts", want.num_experts == got.num_experts},
      {"top_k", want.top_k == got.top_k},
      {"hidden_size", want.hidden_size == got.hidden_size},
      {"intermediate_size", want.intermediate_size == got.intermediate_size},
      {"activation", want.activation == got.activation},
      {"routing.method", want.routing.method == got.routing.method},
      {"routing.renormalize", want.routing.renormalize == got.routing.renormalize},
      {"routing.num_groups", want.routing.num_groups == got.routing.num_groups},
      {"routing.topk_groups", want.routing.topk_groups == got.routing.topk_groups},
      {"routing.routed_scaling_factor",
       want.routing.routed_scaling_factor == got.routing.routed_scaling_factor},
      {"routing.has_correction_bias",
       want.routing.has_correction_bias == got.routing.has_correction_bias},
      {"num_shared_experts", want.num_shared_experts == got.num_shared_experts},
      {"shared_intermediate_size", want.shared_intermediate_size == got.shared_intermediate_size},
      {"quant", want.quant == got.quant},
      {"act_dtype", want.act_dtype == got.act_dtype},
  };
  for (const auto& [name, same] : fields) {
    if (!same) return name;
  }
  return "";
}

}  // namespace

void save_checkpoint_layer(const std::string& dir, const MoeConfig& config, WeightSource& source,
                           int layer) {
  namespace fs = std::filesystem;
  config.validate();
  MOE_CHECK(layer >= 0, "save_checkpoint_layer: layer must be >= 0, got ", layer);
  const Json json = hf_config_json(config, layer);

  const std::string block = "model.layers." + std::to_string(layer) + ".mlp.";
  TensorList tensors;
  const TensorView router = source.router_weight();
  MOE_CHECK(!router.empty(), "save_checkpoint_layer: ", source.describe(),
            " has no router weight; a checkpoint layer needs one");
  tensors.add(block + "gate.weight", router);
  tensors.add(block + "gate.e_score_correction_bias", source.correction_bias());
  const auto add_expert = [&](int expert, const std::string& prefix) {
    for (Proj proj : {Proj::kGate, Proj::kUp, Proj::kDown}) {
      for (Part part : {Part::kWeight, Part::kScale, Part::kGlobalScale, Part::kInputScale}) {
        const std::string suffix = part == Part::kScale && config.quant == QuantMode::kFP8Block
                                       ? std::string("weight_scale_inv")
                                       : std::string(part_name(part));
        tensors.add(prefix + std::string(proj_name(proj)) + "." + suffix,
                    source.expert_tensor(expert, proj, part));
      }
    }
  };
  for (int e = 0; e < config.num_experts; ++e) {
    add_expert(e, block + "experts." + std::to_string(e) + ".");
  }
  if (config.num_shared_experts > 0) add_expert(kSharedExpert, block + "shared_experts.");

  std::error_code ec;
  fs::create_directories(dir, ec);
  MOE_CHECK(!ec, "save_checkpoint_layer: cannot create directory '", dir, "': ", ec.message());
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors.entries(),
                    {{"format", "pt"}});
  const fs::path json_path = fs::path(dir) / "config.json";
  {
    std::ofstream out(json_path, std::ios::binary | std::ios::trunc);
    out << json.dump(2) << "\n";
    MOE_CHECK(out.good(), "save_checkpoint_layer: cannot write '", json_path.string(), "'");
  }

  const MoeConfig back = checkpoint_layer_config(dir, layer);
  const std::string diff = first_difference(config, back);
  MOE_CHECK(diff.empty(), "save_checkpoint_layer: ", dir, " reads back with a different ", diff,
            " (config.json of model type ", json["model_type"].get<std::string>(),
            " cannot express this layer's)");
}

}  // namespace moe
