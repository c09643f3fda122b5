// One MoE layer of a Hugging Face style safetensors checkpoint: find it, read its MoeConfig,
// open it as a WeightSource, and write one (for tests, examples and converted weights).
//
//   const std::string dir = "/models/Qwen3-30B-A3B";
//   const int layer = moe::checkpoint_moe_layers(dir).front();
//   moe::MoeConfig config = moe::checkpoint_layer_config(dir, layer);
//   auto [moe, report] = moe::create_moe(config);
//   moe::CheckpointLayer ckpt = moe::open_checkpoint_layer(dir, config, layer);
//   moe->load_weights(*ckpt.source, ckpt.load_mode);
//
// A thin public face of src/weights/checkpoint_source.h (which holds the name maps of every
// family, the layouts and the checks); every failure is a moe::Error naming the file, the
// tensor, what was expected and what was found.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "moe/config.h"
#include "moe/weights.h"

namespace moe {

/// Indices of the MoE layers of the checkpoint at `path` (a directory, sharded or not, or one
/// .safetensors file), ascending. Dense layers are not listed.
std::vector<int> checkpoint_moe_layers(const std::string& path);

/// The MoeConfig of MoE layer `layer` of the checkpoint directory `dir`: DIR/config.json gives
/// the shape and routing, the layer's tensors the QuantMode.
MoeConfig checkpoint_layer_config(const std::string& dir, int layer);

/// One MoE layer of a checkpoint, ready for ConfigurableMoE::load_weights.
struct CheckpointLayer {
  std::unique_ptr<WeightSource> source;
  /// The LoadMode matching the checkpoint's layout (per-expert: kVanilla; fused gate/up or
  /// stacked experts: kFusedGateUpProj). Both modes are served; this one copies least.
  LoadMode load_mode = LoadMode::kVanilla;
};

/// Opens MoE layer `layer` of the checkpoint at `path`, read for `config` (its sizes and
/// QuantMode, e.g. from checkpoint_layer_config). The file is memory-mapped; tensors are read
/// when load_weights asks for them (an expert-parallel rank reads only its experts).
CheckpointLayer open_checkpoint_layer(const std::string& path, const MoeConfig& config, int layer);

/// Writes `source`'s tensors for `config` as MoE layer `layer` of a checkpoint in directory
/// `dir` (created when missing): DIR/config.json and DIR/model.safetensors, with the tensor
/// names of Qwen3-MoE / DeepSeek checkpoints (`model.layers.L.mlp.gate.weight`,
/// `mlp.experts.E.{gate,up,down}_proj.{weight, weight_scale_inv | weight_scale, ...}`,
/// `mlp.shared_experts.*`, `mlp.gate.e_score_correction_bias`).
/// The layer is read back and must give `config` again: a layer that config.json cannot
/// express (another activation, biases, a routing without a Hugging Face model type) is a
/// moe::Error naming the field. Holds a copy of the layer's tensors in memory while writing.
void save_checkpoint_layer(const std::string& dir, const MoeConfig& config, WeightSource& source,
                           int layer = 0);

}  // namespace moe
