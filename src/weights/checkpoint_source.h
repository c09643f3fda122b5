// One MoE layer of a Hugging Face style safetensors checkpoint as a WeightSource, and the
// discovery functions behind `moe inspect`.
//
// Name maps (facts/checkpoints.md), for layer L under "model.layers.L." (or the multimodal
// "language_model.model.layers.L." / "model.language_model.layers.L."):
//   family    block              router                  routed experts
//   mixtral   block_sparse_moe.  gate.weight             experts.e.{w1 gate, w3 up, w2 down}
//   standard  mlp.               gate.weight (+ gate.e_score_correction_bias)
//             (Qwen3-MoE, OLMoE, DeepSeek, Kimi)         experts.e.{gate,up,down}_proj
//                                                        shared_experts.{gate,up,down}_proj
//   gpt-oss   mlp.               router.{weight, bias}   experts.{gate_up,down}_proj_{blocks,
//                                                        scales,bias} (stacked, interleaved)
//   llama4    feed_forward.      router.weight           experts.{gate_up,down}_proj (stacked,
//                                                        [E, in, out]); shared_expert.*
// Parts of a per-expert projection: .weight, .weight_scale_inv (fp8_block), .weight_scale
// (fp8_per_tensor, nvfp4, mxfp4), .weight_scale_2 (nvfp4 global), .input_scale, .bias.
//
// Layouts, detected from the tensors present:
//   per-expert        experts.e.{gate,up,down}_proj.*        (LoadMode::kVanilla)
//   per-expert fused  experts.e.{gate_up,down}_proj.*        (LoadMode::kFusedGateUpProj)
//   stacked           experts.gate_up_proj [E, 2I, H] or transposed [E, H, 2I] (Llama-4,
//                     GPT-OSS bf16), experts.down_proj [E, H, I] or [E, I, H]; the orientation
//                     is read from the shapes (the family's default where H == 2I); GPT-OSS
//                     rows are interleaved (even = gate, odd = up) and de-interleaved here.
// Every layout serves both kGate/kUp and kGateUp requests (split or concatenated here), in
// the checkpoint format of include/moe/weights.h: per-tensor scalars as f32 [1] ([2] =
// (gate, up) for kGateUp), fp8_block kGateUp scales as the gate's row blocks then the up's
// (splitting a fused tensor needs I % 128 == 0), packed fp4 bytes as kE2M1 [out, in].
//
// Checks: every tensor's dtype and shape against the MoeConfig and the QuantMode; a missing
// required tensor, a wrong dtype or shape is one moe::Error naming the file, the tensor, what
// was expected and what was found. Returned views point into the read-only mapping where no
// transform is needed (no copy at all); otherwise into a buffer of this source filled with
// one memcpy per contiguous run (row-wise only for de-interleaving, blocked for transposes).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"
#include "weights/safetensors.h"

namespace moe {

/// The tensor-name conventions of the model families.
enum class CheckpointFamily : uint8_t { kMixtral, kStandard, kGptOss, kLlama4 };
/// How a layer stores its routed experts.
enum class ExpertLayout : uint8_t { kPerExpert, kPerExpertFused, kStacked };

std::string_view checkpoint_family_name(CheckpointFamily f);  ///< "mixtral", "gpt-oss", ...
std::string_view expert_layout_name(ExpertLayout l);          ///< "per-expert", "stacked", ...

/// What a checkpoint holds for one MoE layer.
struct MoeLayerInfo {
  int layer = -1;
  std::string prefix;  ///< "model.layers.3.mlp."
  CheckpointFamily family = CheckpointFamily::kStandard;
  ExpertLayout layout = ExpertLayout::kPerExpert;
  QuantMode quant = QuantMode::kBF16;  ///< from the tensors' dtypes
  std::string weight_dtype;            ///< the routed experts' weight dtype in the file
  int num_experts = 0;                 ///< rows of the router weight [E, H]
  int num_expert_tensors_found = 0;    ///< per-expert layouts: distinct expert indices found
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  ///< per routed expert
  int64_t shared_intermediate_size = 0;
  bool has_router_bias = false;
  bool has_correction_bias = false;
  bool has_expert_biases = false;
  bool transposed = false;   ///< stacked weights stored [E, in, out]
  bool interleaved = false;  ///< gate/up rows interleaved (GPT-OSS)
  int num_tensors = 0;       ///< tensors under `prefix`
  uint64_t bytes = 0;        ///< their bytes

  /// The LoadMode the layout maps to (per-expert: kVanilla, fused/stacked: kFusedGateUpProj).
  LoadMode load_mode() const;
};

/// The MoE layer `layer` of `ckpt`; throws moe::Error naming the router tensors looked for
/// when the layer has none (a dense layer or a wrong index).
MoeLayerInfo inspect_moe_layer(SafetensorsCheckpoint& ckpt, int layer);
/// Every MoE layer of the checkpoint, by layer index.
std::vector<MoeLayerInfo> list_moe_layers(SafetensorsCheckpoint& ckpt);

/// The layer's QuantMode: read from its tensors' dtypes; `declared` (config.json's
/// quantization_config, when present) only picks w4a8 over mxfp4 and is cross-checked: a
/// different quantized mode is an error naming both. A layer stored in bf16/fp16 under a
/// quantized config (excluded from quantization) is reported as stored.
QuantMode detect_quant_mode(SafetensorsCheckpoint& ckpt, int layer,
                            std::optional<QuantMode> declared);
/// The layer's MoeConfig: DIR/config.json (shape and routing) with the QuantMode of
/// detect_quant_mode.
MoeConfig checkpoint_layer_config(const std::string& dir, int layer);

/// Bytes handed out and the time they took.
struct LoadStats {
  uint64_t bytes = 0;
  int64_t tensors = 0;
  double seconds = 0;  ///< from the first request to the end of the last one
  double bytes_per_second() const { return seconds > 0 ? bytes / seconds : 0; }
  /// "3.52 GB (2304 tensors) in 1.61 s: 2.19 GB/s"
  std::string str() const;
};

/// The WeightSource of one MoE layer of a checkpoint.
class CheckpointSource final : public WeightSource {
 public:
  /// Layer `layer` of `ckpt`, read for `config` (its sizes and QuantMode). Detects the family
  /// and layout; throws moe::Error when the layer is missing or its stacked tensors' shapes
  /// fit neither orientation.
  CheckpointSource(std::shared_ptr<SafetensorsCheckpoint> ckpt, const MoeConfig& config, int layer);
  /// Opens the checkpoint at `path` (file or directory).
  static std::unique_ptr<CheckpointSource> open(const std::string& path, const MoeConfig& config,
                                                int layer);
  ~CheckpointSource() override;

  const MoeLayerInfo& info() const { return info_; }
  /// The LoadMode matching the checkpoint's layout (both modes are served).
  LoadMode natural_load_mode() const { return info_.load_mode(); }

  /// Draws a progress bar on stderr while tensors are handed out, when stderr is a terminal.
  /// `expected_bytes`: the bytes the caller will ask for (0: every tensor of the layer).
  void enable_progress(uint64_t expected_bytes = 0);
  /// Ends the progress bar's line (if one was drawn).
  void finish_progress();
  LoadStats stats() const;

  TensorView expert_tensor(int expert, Proj proj, Part part) override;
  TensorView router_weight() override;
  TensorView router_bias() override;
  TensorView correction_bias() override;
  std::string describe() const override;

 private:
  struct Run;
  struct Slice;
  TensorView serve(const std::vector<Run>& runs, DType out_dtype, std::vector<int64_t> out_shape);
  TensorView vector_tensor(const std::string& name, const char* what, bool as_f32);
  void account(const TensorView& t);

  std::shared_ptr<SafetensorsCheckpoint> ckpt_;
  MoeConfig config_;
  MoeLayerInfo info_;
  bool shared_fused_ = false;
  Tensor buffer_;   // backs views that needed a transform
  Tensor convert_;  // dtype conversions
  LoadStats stats_;
  std::optional<std::chrono::steady_clock::time_point> first_request_;
  bool progress_ = false;
  bool progress_drawn_ = false;
  uint64_t progress_total_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace moe
