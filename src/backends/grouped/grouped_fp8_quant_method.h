// The grouped backend's FP8 quant methods (fp8_per_tensor and fp8_block): own the e4m3
// expert weights, their scales in the layout the FP8 grouped GEMM reads, and the TMA maps.
//
// G = local routed experts + shared groups (as Grouped16BitQuantMethod: a shared MLP of S*I
// is S groups of I), I = intermediate_size, H = hidden_size, KB1 = ceil(H/128),
// KB2 = ceil(I/128), MT1 = ceil(2I/128) (FC1 weight tiles of 128 stored rows),
// MT2 = ceil(H/128). All device memory:
//   W13 e4m3 [G, 2I, H]  gate/up interleaved by 8 rows exactly like the 16-bit W13
//                        (grouped_layout.h fc1_source_row), K-major
//   W2  e4m3 [G, H, I]   K-major
//   maps: make_weight_map(W13, kE4M3, G, 2I, H) and (W2, kE4M3, G, H, I), box {128 bytes,
//         128 rows, 1}
//   B13 f32 [G, 2I] (interleaved like W13), B2 f32 [G, H] when the layer has biases (a
//         missing bias is zero; the down bias only on shared part 0)
// fp8_block (grouped_fp8_layout.h packs the scales):
//   S13 f32 [G, MT1, 2, KB1]  S13[g][t][u][kb] = checkpoint block scale (weight_scale_inv) of
//                             the gate (u = 0) / up (u = 1) projection covering rows
//                             64t..64t+63 of that projection within group g, K block kb.
//                             W13 tile t holds gate and up rows 64t..64t+63. For shared group
//                             s the checkpoint block row is (s*I + 64t)/128. Every t < MT1
//                             has 64t < I, so every entry is a real scale.
//   S2  f32 [G, MT2, KB2]     S2[g][mb][kb] = block scale of down rows 128mb.., K block kb of
//                             the group: checkpoint block column (s*I + 128kb)/128 for shared
//                             group s.
//   requires (fp8_block_unsupported_reason): I % 16 == 0 and H % 16 == 0 (16-byte TMA rows);
//   I % 128 == 0 with more than one shared group (else a group's K blocks straddle
//   checkpoint blocks). A fused gate_up_proj needs the source's intermediate size % 128 == 0
//   to split its scales (a load-time error otherwise, as in the reference backend).
// fp8_per_tensor:
//   S13 f32 [G, 2]   (gate weight scale, up weight scale) per group
//   S2  f32 [G]      down weight scale
//   input_scale()         f32 [1] s_in = max over the rank's groups (routed and shared) of
//                         the gate/up input_scale
//   intermediate_scale()  f32 [1] s_d  = max over the same groups of the down input_scale
//   (the reference backend's static activation scales, over the same experts).
//   requires I % 16 == 0 and H % 16 == 0.
// Every source tensor is checked: e4m3 weights (no NaN codes), f32 scales (finite, > 0),
// exact shapes; errors name expert_tensor_name(...). Loading stages one group on the host
// and copies it with cudaMemcpy (load time only).
//
// EPLB migration (register_eplb_tensors): fp8_block registers, per local expert group g,
// W13[g], W2[g], S13[g], S2[g] (and B13[g], B2[g]): supported. fp8_per_tensor is not
// supported: s_in / s_d are maxima over the rank's experts, which a migration would change.
#pragma once

#include <cuda.h>

#include <string>
#include <vector>

#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe {
class ExpertTensorRegistry;
}

namespace moe::grouped {

class GroupedFp8QuantMethod {
 public:
  /// config.quant must be kFP8PerTensor or kFP8Block, with shapes unsupported_reason()
  /// accepts; throws moe::Error otherwise.
  GroupedFp8QuantMethod(const MoeConfig& config, int expert_begin, int num_local_experts,
                        int num_shared_groups);

  /// Why fp8_block cannot run `config` with `num_shared_groups` shared groups; "" when it can.
  static std::string fp8_block_unsupported_reason(const MoeConfig& config, int num_shared_groups);
  /// The same for config.quant (either fp8 mode).
  static std::string unsupported_reason(const MoeConfig& config, int num_shared_groups);

  void create_weights();
  /// Local experts [expert_begin, expert_begin + num_local) and the shared MLP's groups.
  void load_weights(WeightSource& source, LoadMode mode);
  /// Builds the TMA maps (the weights' addresses are final from here on).
  void process_weights_after_loading();
  void pre_reload_weights() { loaded_ = false; }
  /// EPLB: see the file comment.
  void register_eplb_tensors(ExpertTensorRegistry& registry);
  bool loaded() const { return loaded_; }

  bool block_scaled() const { return block_; }
  int num_groups() const { return num_local_ + num_shared_; }
  const CUtensorMap& w13_map() const { return w13_map_; }
  const CUtensorMap& w2_map() const { return w2_map_; }
  /// Device W13 / W2 (what the maps cover).
  const void* w13_data() const { return w13_.data(); }
  const void* w2_data() const { return w2_.data(); }
  /// Device S13 / S2 (layouts above).
  const float* w13_scales() const { return s13_.data_as<float>(); }
  const float* w2_scales() const { return s2_.data_as<float>(); }
  /// Device f32 [1] s_in / s_d (fp8_per_tensor); nullptr for fp8_block.
  const float* input_scale() const { return block_ ? nullptr : in_scale_.data_as<float>(); }
  const float* intermediate_scale() const {
    return block_ ? nullptr : inter_scale_.data_as<float>();
  }
  const float* b13() const { return has_bias_ ? b13_.data_as<float>() : nullptr; }
  const float* b2() const { return has_bias_ ? b2_.data_as<float>() : nullptr; }

 private:
  void load_block_scales(WeightSource& source, LoadMode mode, int expert, int group,
                         int shared_part);
  void load_tensor_scales(WeightSource& source, LoadMode mode, int expert, int group);

  MoeConfig config_;
  bool block_;
  int expert_begin_, num_local_, num_shared_;
  bool has_bias_;
  bool staged_ = false;  // load_weights completed since create_weights / the last failure
  bool loaded_ = false;
  Tensor w13_, w2_, s13_, s2_, b13_, b2_, in_scale_, inter_scale_;  // device
  // fp8_per_tensor, host: S13 [G, 2], S2 [G], and the maxima of the input scales.
  std::vector<float> host_s13_, host_s2_;
  float host_in_scale_ = 0, host_inter_scale_ = 0;
  CUtensorMap w13_map_{}, w2_map_{};
};

}  // namespace moe::grouped
