// What one MoE layer is (MoeConfig) and where it runs in expert parallelism (Mapping).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "moe/dtype.h"

namespace moe {

enum class Activation {
  kSwiGLU,     ///< silu(gate) * up
  kSwiGLUOAI,  ///< GPT-OSS: clamp, (up + 1) * gate * sigmoid(alpha * gate)
};

enum class RoutingMethod {
  kSoftmaxTopK,  ///< Mixtral, Qwen3-MoE, OLMoE, DeepSeek-V2-Lite: softmax -> topk [-> renorm]
  kDeepSeekV3,   ///< DeepSeek-V3/R1, Kimi-K2: sigmoid, biased grouped selection, scaling
  kLlama4,       ///< topk on logits -> sigmoid; the weight multiplies the expert's input
  kGptOss,       ///< topk on logits -> softmax over the selected k
};

enum class QuantMode {
  kBF16,
  kFP16,
  kFP8PerTensor,    ///< e4m3 weights, fp32 scale per expert; static per-tensor activations
  kFP8Block,        ///< e4m3 weights with 128x128 fp32 block scales; activations 1x128
  kNVFP4,           ///< e2m1 weights, e4m3 scale per 16 + fp32 global; bf16 activations
  kMXFP4,           ///< e2m1 weights, ue8m0 scale per 32; bf16 activations
  kW4A8MXFP4MXFP8,  ///< e2m1 weights (ue8m0/32); e4m3 activations (ue8m0/32)
};

struct RoutingConfig {
  RoutingMethod method = RoutingMethod::kSoftmaxTopK;
  /// Softmax-topk: divide the k weights by their sum. DeepSeek-V3: norm_topk_prob.
  bool renormalize = true;
  /// DeepSeek-V3: experts are split into num_groups groups; topk_groups are kept.
  int num_groups = 1;
  int topk_groups = 1;
  /// Multiplies the final weights (DeepSeek-V3 2.5, Kimi-K2 2.827; 1 elsewhere).
  float routed_scaling_factor = 1.0f;
  /// DeepSeek-V3: e_score_correction_bias [E] is added for selection only.
  bool has_correction_bias = false;
};

struct SwigluOaiParams {
  float alpha = 1.702f;
  float limit = 7.0f;
};

/// One MoE layer. Sizes count elements; all weights of the layer share `quant`.
struct MoeConfig {
  std::string name;  ///< preset or model name, for reports
  int num_experts = 0;
  int top_k = 0;
  int hidden_size = 0;
  int intermediate_size = 0;  ///< per routed expert
  Activation activation = Activation::kSwiGLU;
  SwigluOaiParams swiglu_oai;
  RoutingConfig routing;
  /// The router projection has a bias (GPT-OSS): logits = x W_gate^T + b.
  bool has_router_bias = false;
  /// Experts carry fc1 [2I] and fc2 [H] biases (GPT-OSS).
  bool has_expert_biases = false;
  /// Shared experts, fused into one MLP of shared_intermediate_size (the sum over the
  /// num_shared_experts); its output is added to the routed output with weight 1.
  int num_shared_experts = 0;
  int shared_intermediate_size = 0;
  /// Llama-4: the routing weight scales the expert's input instead of its output (k == 1).
  bool apply_router_weight_on_input = false;
  QuantMode quant = QuantMode::kBF16;
  /// Element type of x and of the layer's output (bf16 or f16).
  DType act_dtype = DType::kBF16;
  /// The scheduler runs forwards of more tokens in chunks of this many.
  int max_num_tokens = 8192;
  /// Expert parallelism across GPUs: the type each rank's partial sums travel in to the
  /// tokens' ranks, where combine sums them in fp32 (ascending rank) and rounds once. f32
  /// (default): nothing is rounded before the sum. act_dtype: half the combine's bytes, one
  /// rounding per partial first (what DeepEP's combine sends). CPU ranks always use f64.
  DType ep_partial_dtype = DType::kF32;

  /// Throws moe::Error naming the first inconsistent field and why.
  void validate() const;
  /// Multi-line human-readable description.
  std::string summary() const;
};

/// Expert parallelism: this process is rank ep_rank of ep_size.
struct Mapping {
  int ep_size = 1;
  int ep_rank = 0;
  void validate() const;
};

std::string_view activation_name(Activation a);
std::string_view routing_method_name(RoutingMethod m);
std::string_view quant_mode_name(QuantMode q);  ///< "bf16", "fp8_block", ...
/// Inverses of the *_name functions; throw moe::Error listing the accepted names.
Activation parse_activation(std::string_view name);
RoutingMethod parse_routing_method(std::string_view name);
QuantMode parse_quant_mode(std::string_view name);
std::vector<QuantMode> all_quant_modes();

/// Built-in model presets (facts/models.md): "mixtral-8x7b", "qwen3-30b-a3b", ...
std::vector<std::string> preset_names();
/// The preset's config; throws moe::Error listing the known presets.
MoeConfig preset(std::string_view name);

/// Reads a Hugging Face config.json (Mixtral, Qwen3-MoE, OLMoE, DeepSeek-V2/V3, Kimi-K2,
/// GPT-OSS, Llama-4 incl. the multimodal wrapper's text_config) into a MoeConfig.
MoeConfig config_from_hf_json_text(std::string_view json_text, std::string_view source = "");
MoeConfig config_from_hf_json_file(const std::string& path);

}  // namespace moe
