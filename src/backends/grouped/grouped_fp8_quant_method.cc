// The grouped backend's FP8 quant methods (contract in grouped_fp8_quant_method.h): the e4m3
// weights go through the 16-bit method's row placement (load_group_weights), the scales are
// checked here and packed with grouped_fp8_layout.h.
#include "backends/grouped/grouped_fp8_quant_method.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "backends/grouped/grouped_fp8_layout.h"
#include "backends/grouped/grouped_quant_method.h"
#include "backends/grouped/tma_map.h"
#include "core/cuda_check.h"
#include "eplb/expert_tensors.h"
#include "moe/errors.h"

namespace moe::grouped {
namespace {

void copy_to_device(void* dst, const void* src, size_t bytes) {
  MOE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

/// A present, contiguous host tensor from the source.
TensorView fetch(WeightSource& source, int expert, Proj proj, Part part) {
  const TensorView t = source.expert_tensor(expert, proj, part);
  const std::string name = expert_tensor_name(expert, proj, part);
  MOE_CHECK(!t.empty(), name, ": missing from ", source.describe());
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(), name,
            ": expected a contiguous host tensor, got ", t.str(), " from ", source.describe());
  return t;
}

/// Throws unless every value of the f32 tensor `t` is a usable scale (finite, > 0).
void check_scales(const TensorView& t, int expert, Proj proj, Part part) {
  const float* v = t.data_as<const float>();
  const int64_t cols = t.ndim() == 2 ? t.size(1) : t.numel();
  for (int64_t i = 0; i < t.numel(); ++i) {
    MOE_CHECK(std::isfinite(v[i]) && v[i] > 0.0f, expert_tensor_name(expert, proj, part), "[",
              t.ndim() == 2 ? std::to_string(i / cols) + ", " : std::string(), i % cols,
              "] = ", v[i], ": a scale must be finite and > 0");
  }
}

/// A per-tensor f32 value: [1], or for kGateUp [2] = (gate, up) or [1] shared by both.
/// Returns (gate, up) for kGateUp, else (v, v).
std::array<float, 2> read_scalar_part(WeightSource& source, int expert, Proj proj, Part part) {
  const TensorView t = fetch(source, expert, proj, part);
  const bool fused = proj == Proj::kGateUp;
  MOE_CHECK(
      t.dtype() == DType::kF32 && t.ndim() == 1 && (t.size(0) == 1 || (fused && t.size(0) == 2)),
      expert_tensor_name(expert, proj, part), ": expected f32[1]",
      fused ? " or f32[2] (gate, up)" : "", ", got ", t.str(), " from ", source.describe());
  check_scales(t, expert, proj, part);
  const float* v = t.data_as<const float>();
  return {v[0], v[t.size(0) - 1]};
}

/// Block scales f32 [ceil(rows/128), ceil(cols/128)] of a projection W [rows, cols], checked.
TensorView fetch_block_scales(WeightSource& source, int expert, Proj proj, int64_t rows,
                              int64_t cols) {
  const TensorView t = fetch(source, expert, proj, Part::kScale);
  check_tensor(t, expert_tensor_name(expert, proj, Part::kScale), DType::kF32,
               {fp8_blocks(rows), fp8_blocks(cols)});
  check_scales(t, expert, proj, Part::kScale);
  return t;
}

}  // namespace

GroupedFp8QuantMethod::GroupedFp8QuantMethod(const MoeConfig& config, int expert_begin,
                                             int num_local_experts, int num_shared_groups)
    : config_(config),
      block_(config.quant == QuantMode::kFP8Block),
      expert_begin_(expert_begin),
      num_local_(num_local_experts),
      num_shared_(num_shared_groups),
      has_bias_(config.has_expert_biases) {
  const std::string why = unsupported_reason(config, num_shared_groups);
  MOE_CHECK(why.empty(), "grouped fp8 quant method: ", why);
  MOE_CHECK(num_local_experts >= 1 && num_shared_groups >= 0, "grouped fp8: ", num_local_experts,
            " local experts and ", num_shared_groups, " shared groups");
  MOE_CHECK(num_shared_groups == 0 ||
                (config.num_shared_experts > 0 &&
                 config.shared_intermediate_size ==
                     static_cast<int64_t>(num_shared_groups) * config.intermediate_size),
            "grouped fp8: ", num_shared_groups, " shared groups of ", config.intermediate_size,
            " do not make the shared MLP of ", config.shared_intermediate_size);
}

std::string GroupedFp8QuantMethod::fp8_block_unsupported_reason(const MoeConfig& config,
                                                                int num_shared_groups) {
  return fp8_unsupported_reason(QuantMode::kFP8Block, config.intermediate_size, config.hidden_size,
                                num_shared_groups);
}

std::string GroupedFp8QuantMethod::unsupported_reason(const MoeConfig& config,
                                                      int num_shared_groups) {
  return fp8_unsupported_reason(config.quant, config.intermediate_size, config.hidden_size,
                                num_shared_groups);
}

void GroupedFp8QuantMethod::create_weights() {
  const int64_t g = num_groups(), h = config_.hidden_size, inter = config_.intermediate_size;
  const Fp8GroupDims d{inter, h};
  const Device dev = Device::cuda(0);
  w13_ = Tensor::empty({g, 2 * inter, h}, DType::kE4M3, dev);  // [G, 2I, H]
  w2_ = Tensor::empty({g, h, inter}, DType::kE4M3, dev);       // [G, H, I]
  if (block_) {
    s13_ = Tensor::empty({g, d.mt1(), 2, d.kb1()}, DType::kF32, dev);  // [G, MT1, 2, KB1]
    s2_ = Tensor::empty({g, d.mt2(), d.kb2()}, DType::kF32, dev);      // [G, MT2, KB2]
  } else {
    s13_ = Tensor::empty({g, 2}, DType::kF32, dev);       // [G, 2] (gate, up)
    s2_ = Tensor::empty({g}, DType::kF32, dev);           // [G]
    in_scale_ = Tensor::empty({1}, DType::kF32, dev);     // s_in
    inter_scale_ = Tensor::empty({1}, DType::kF32, dev);  // s_d
  }
  if (has_bias_) {
    b13_ = Tensor::empty({g, 2 * inter}, DType::kF32, dev);  // [G, 2I]
    b2_ = Tensor::empty({g, h}, DType::kF32, dev);           // [G, H]
  }
  staged_ = false;
  loaded_ = false;
}

void GroupedFp8QuantMethod::load_weights(WeightSource& source, LoadMode mode) {
  MOE_CHECK(w13_.defined(), "grouped fp8: load_weights before create_weights");
  // A failed load leaves the weights unusable until a complete one.
  staged_ = false;
  loaded_ = false;
  const int64_t g = num_groups(), h = config_.hidden_size, inter = config_.intermediate_size;
  if (!block_) {
    host_s13_.assign(g * 2, 0.0f);
    host_s2_.assign(g, 0.0f);
    host_in_scale_ = 0.0f;
    host_inter_scale_ = 0.0f;
  }
  for (int group = 0; group < g; ++group) {
    const bool shared = group >= num_local_;
    const int expert = shared ? kSharedExpert : expert_begin_ + group;
    const int shared_part = shared ? group - num_local_ : 0;
    GroupWeightPtrs dst;
    dst.w13 = w13_.data_as<uint8_t>() + group * 2 * inter * h;
    dst.w2 = w2_.data_as<uint8_t>() + group * h * inter;
    if (has_bias_) {
      dst.b13 = b13_.data_as<float>() + group * 2 * inter;
      dst.b2 = b2_.data_as<float>() + group * h;
    }
    load_group_weights(source, mode, config_, DType::kE4M3, expert, shared_part, dst);
    if (block_) {
      load_block_scales(source, mode, expert, group, shared_part);
    } else {
      load_tensor_scales(source, mode, expert, group);
    }
  }
  if (!block_) {
    copy_to_device(s13_.data(), host_s13_.data(), host_s13_.size() * sizeof(float));
    copy_to_device(s2_.data(), host_s2_.data(), host_s2_.size() * sizeof(float));
    copy_to_device(in_scale_.data(), &host_in_scale_, sizeof(float));
    copy_to_device(inter_scale_.data(), &host_inter_scale_, sizeof(float));
  }
  staged_ = true;
}

void GroupedFp8QuantMethod::load_block_scales(WeightSource& source, LoadMode mode, int expert,
                                              int group, int shared_part) {
  const int64_t h = config_.hidden_size, inter = config_.intermediate_size;
  const int64_t src_inter = expert == kSharedExpert ? config_.shared_intermediate_size : inter;
  const Fp8GroupDims d{inter, h};

  // NOTE: a source may reuse its buffer on every call: each view is packed before the next
  // request.
  std::vector<float> s13(d.s13_size());  // [MT1, 2, KB1]
  if (mode == LoadMode::kFusedGateUpProj) {
    MOE_CHECK(src_inter % kFp8BlockSize == 0,
              expert_tensor_name(expert, Proj::kGateUp, Part::kScale),
              ": fp8_block scales cover 128 rows, so splitting a fused gate_up_proj needs an "
              "intermediate size that is a multiple of 128, got ",
              src_inter, "; load gate_proj and up_proj separately (LoadMode::kVanilla)");
    const TensorView gu = fetch_block_scales(source, expert, Proj::kGateUp, 2 * src_inter, h);
    const float* gate = gu.data_as<const float>();  // [src_inter/128, KB1]
    const float* up = gate + fp8_blocks(src_inter) * d.kb1();
    pack_fc1_block_scales_into(gate, false, src_inter, d, shared_part, s13.data());
    pack_fc1_block_scales_into(up, true, src_inter, d, shared_part, s13.data());
  } else {
    for (const bool up : {false, true}) {
      const TensorView s =
          fetch_block_scales(source, expert, up ? Proj::kUp : Proj::kGate, src_inter, h);
      pack_fc1_block_scales_into(s.data_as<const float>(), up, src_inter, d, shared_part,
                                 s13.data());
    }
  }
  copy_to_device(s13_.data_as<float>() + group * d.s13_size(), s13.data(),
                 s13.size() * sizeof(float));

  const TensorView down = fetch_block_scales(source, expert, Proj::kDown, h, src_inter);
  const std::vector<float> s2 =
      pack_fc2_block_scales(down.data_as<const float>(), src_inter, d, shared_part);  // [MT2, KB2]
  copy_to_device(s2_.data_as<float>() + group * d.s2_size(), s2.data(), s2.size() * sizeof(float));
}

void GroupedFp8QuantMethod::load_tensor_scales(WeightSource& source, LoadMode mode, int expert,
                                               int group) {
  // (gate, up) weight scales and input scales; per projection, or from the fused tensor.
  std::array<float, 2> w{}, in{};
  if (mode == LoadMode::kFusedGateUpProj) {
    w = read_scalar_part(source, expert, Proj::kGateUp, Part::kScale);
    in = read_scalar_part(source, expert, Proj::kGateUp, Part::kInputScale);
  } else {
    w[0] = read_scalar_part(source, expert, Proj::kGate, Part::kScale)[0];
    in[0] = read_scalar_part(source, expert, Proj::kGate, Part::kInputScale)[0];
    w[1] = read_scalar_part(source, expert, Proj::kUp, Part::kScale)[0];
    in[1] = read_scalar_part(source, expert, Proj::kUp, Part::kInputScale)[0];
  }
  host_s13_[2 * group] = w[0];
  host_s13_[2 * group + 1] = w[1];
  host_in_scale_ = std::max({host_in_scale_, in[0], in[1]});
  host_s2_[group] = read_scalar_part(source, expert, Proj::kDown, Part::kScale)[0];
  host_inter_scale_ = std::max(host_inter_scale_,
                               read_scalar_part(source, expert, Proj::kDown, Part::kInputScale)[0]);
}

void GroupedFp8QuantMethod::process_weights_after_loading() {
  MOE_CHECK(staged_, "grouped fp8: process_weights_after_loading before a complete load_weights");
  const int64_t g = num_groups(), h = config_.hidden_size, inter = config_.intermediate_size;
  w13_map_ = make_weight_map(w13_.data(), DType::kE4M3, g, 2 * inter, h);
  w2_map_ = make_weight_map(w2_.data(), DType::kE4M3, g, h, inter);
  loaded_ = true;
}

void GroupedFp8QuantMethod::register_eplb_tensors(ExpertTensorRegistry& registry) {
  if (!block_) {
    registry.set_support(EplbSupport::kNotSupported,
                         "fp8_per_tensor quantizes activations with the largest input_scale over "
                         "the rank's experts, which a migrated slot would change");
    return;
  }
  registry.add_rows("w13", w13_);
  registry.add_rows("w2", w2_);
  registry.add_rows("s13", s13_);
  registry.add_rows("s2", s2_);
  if (has_bias_) {
    registry.add_rows("b13", b13_);
    registry.add_rows("b2", b2_);
  }
  registry.set_support(EplbSupport::kSupported);
}

}  // namespace moe::grouped
