// Where a layer's weights come from: the WeightSource interface (checkpoint readers, random
// weights, a user's own tensors) and the canonical names of per-expert tensors.
//
// A source hands out host tensors in *checkpoint format* for the layer's QuantMode:
//   mode             kWeight [out, in]       kScale                          kGlobalScale /
//   kInputScale bf16 / fp16      bf16 / f16              -                               -
//   fp8_per_tensor   e4m3                    f32 [1] (dequant)               - / f32 [1] static act
//   scale fp8_block        e4m3                    f32 [ceil(out/128), ceil(in/128)]  - nvfp4 e2m1
//   (packed)           e4m3scale [out, in/16]          f32 [1] (= amax/(448*6)) / f32 [1] optional
//   mxfp4, w4a8      e2m1 (packed)           ue8m0 [out, in/32]              -
// kBias: f32 or bf16 [out] (fc1: kGate and kUp, fc2: kDown).
// Dequantized weight = q * scale (* global scale). Gate = W1, up = W3, down = W2.
// With LoadMode::kFusedGateUpProj, kGateUp replaces kGate and kUp: [2I, H] = [gate | up],
// with kScale over the same rows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "moe/config.h"
#include "moe/tensor.h"

namespace moe {

enum class Proj : uint8_t { kGate, kUp, kDown, kGateUp };
enum class Part : uint8_t { kWeight, kScale, kGlobalScale, kInputScale, kBias };

/// Per-expert (VANILLA) or fused gate/up (FUSED_GATE_UP_PROJ) tensors.
enum class LoadMode : uint8_t { kVanilla, kFusedGateUpProj };

/// Expert index used for the shared-expert MLP.
inline constexpr int kSharedExpert = -1;

std::string_view proj_name(Proj p);  ///< "gate_proj", "up_proj", "down_proj", "gate_up_proj"
std::string_view part_name(Part p);  ///< "weight", "weight_scale", ...
/// "experts.3.down_proj.weight_scale" or "shared_experts.gate_proj.weight", for messages.
std::string expert_tensor_name(int expert, Proj proj, Part part);

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  /// Expert `expert` (or kSharedExpert)'s tensor in checkpoint format on the host, or an
  /// empty view when the source has no such tensor. The view stays valid until the next
  /// call on this source or its destruction.
  virtual TensorView expert_tensor(int expert, Proj proj, Part part) = 0;
  /// Router projection W_gate f32 or bf16 [E, H]; empty view when absent.
  virtual TensorView router_weight() = 0;
  /// Router bias f32 [E] (GPT-OSS); empty view when absent.
  virtual TensorView router_bias() = 0;
  /// DeepSeek-V3 e_score_correction_bias f32 [E]; empty view when absent.
  virtual TensorView correction_bias() = 0;
  /// One line naming the source, for reports and errors.
  virtual std::string describe() const = 0;
};

/// Deterministic random weights in the checkpoint format of `config.quant`: master weights
/// ~ N(0, 1/in) per row (so that each projection keeps unit-scale activations), generated
/// per (seed, expert, tensor) independently of the order of requests, then quantized with
/// the quantizers of src/quant. Router weight ~ N(0, 1/H); biases ~ N(0, 0.1^2).
std::unique_ptr<WeightSource> make_random_weights(const MoeConfig& config, uint64_t seed);

}  // namespace moe
