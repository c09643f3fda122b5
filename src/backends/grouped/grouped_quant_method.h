// The grouped backend's 16-bit quant method (bf16 / fp16): owns the device weights in the
// layout the grouped kernels read and the TMA maps over them.
//   W13 [G, 2I, H]  gate/up interleaved by 8 rows (grouped_layout.h), K-major
//   W2  [G, H, I]   K-major
//   B13 f32 [G, 2I] (interleaved like W13), B2 f32 [G, H]   when the experts have biases
// G = local routed experts + shared groups: a shared MLP of S*I is split into S groups of I
// (W1/W3 rows, W2 columns), which sums to the same MLP.
#pragma once

#include <cuda.h>

#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe::grouped {

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
  bool loaded() const { return loaded_; }

  DType dtype() const { return dtype_; }
  int num_groups() const { return num_local_ + num_shared_; }
  const CUtensorMap& w13_map() const { return w13_map_; }
  const CUtensorMap& w2_map() const { return w2_map_; }
  const float* b13() const { return has_bias_ ? b13_.data_as<float>() : nullptr; }
  const float* b2() const { return has_bias_ ? b2_.data_as<float>() : nullptr; }

 private:
  void load_group(WeightSource& source, LoadMode mode, int expert, int group, int shared_part);

  MoeConfig config_;
  DType dtype_;
  int expert_begin_, num_local_, num_shared_;
  bool has_bias_;
  bool loaded_ = false;
  Tensor w13_, w2_, b13_, b2_;  // device
  CUtensorMap w13_map_{}, w2_map_{};
};

}  // namespace moe::grouped
