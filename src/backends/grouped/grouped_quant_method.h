// The grouped backend's 16-bit quant method (bf16 / fp16): owns the device weights in the
// layout the grouped kernels read and the TMA maps over them.
//   W13 [G, 2I, H]  gate/up interleaved by 8 rows (grouped_layout.h), K-major
//   W2  [G, H, I]   K-major
//   B13 f32 [G, 2I] (interleaved like W13), B2 f32 [G, H]   when the experts have biases
// G = local routed experts + shared groups: a shared MLP of S*I is split into S groups of I
// (W1/W3 rows, W2 columns), which sums to the same MLP.
// load_group_weights() places one group's weights and biases in this layout for any element
// size; the fp8 method (grouped_fp8_quant_method.h) shares it.
#pragma once

#include <cuda.h>

#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe {
class ExpertTensorRegistry;
}

namespace moe::grouped {

/// Device destinations of one group g: W13 row block [2I, H] and W2 [H, I] of element type
/// `dtype`, and B13 f32 [2I] / B2 f32 [H] (nullptr: the layer has no biases).
struct GroupWeightPtrs {
  void* w13 = nullptr;
  void* w2 = nullptr;
  float* b13 = nullptr;
  float* b2 = nullptr;
};

/// Loads the kWeight (and kBias) parts of expert `expert` -- or, for kSharedExpert, part
/// `shared_part` of the shared MLP (W1/W3 rows and W2 columns shared_part*I ..) -- checks
/// them (dtype, shape; e4m3 codes must not be NaN), places them in the grouped layout and
/// copies them to `dst` (cudaMemcpy). Host staging: one group's W13 and W2. A missing bias
/// is zero; the down bias goes to part 0 only (the other parts get zeros).
void load_group_weights(WeightSource& source, LoadMode mode, const MoeConfig& config, DType dtype,
                        int expert, int shared_part, const GroupWeightPtrs& dst);

class Grouped16BitQuantMethod {
 public:
  Grouped16BitQuantMethod(const MoeConfig& config, int expert_begin, int num_local_experts,
                          int num_shared_groups);

  void create_weights();
  /// Local experts [expert_begin, expert_begin + num_local) and the shared MLP.
  void load_weights(WeightSource& source, LoadMode mode);
  /// Builds the TMA maps (the weights' addresses are final from here on).
  void process_weights_after_loading();
  void pre_reload_weights() { loaded_ = false; }
  /// EPLB: W13, W2 (and B13, B2) rows of the local experts; supported.
  void register_eplb_tensors(ExpertTensorRegistry& registry);
  bool loaded() const { return loaded_; }

  DType dtype() const { return dtype_; }
  int num_groups() const { return num_local_ + num_shared_; }
  const CUtensorMap& w13_map() const { return w13_map_; }
  const CUtensorMap& w2_map() const { return w2_map_; }
  const float* b13() const { return has_bias_ ? b13_.data_as<float>() : nullptr; }
  const float* b2() const { return has_bias_ ? b2_.data_as<float>() : nullptr; }

 private:
  MoeConfig config_;
  DType dtype_;
  int expert_begin_, num_local_, num_shared_;
  bool has_bias_;
  bool loaded_ = false;
  Tensor w13_, w2_, b13_, b2_;  // device
  CUtensorMap w13_map_{}, w2_map_{};
};

}  // namespace moe::grouped
