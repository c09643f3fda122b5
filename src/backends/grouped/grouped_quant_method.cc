#include "backends/grouped/grouped_quant_method.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <string>
#include <vector>

#include "backends/grouped/grouped_fp8_layout.h"
#include "backends/grouped/grouped_layout.h"
#include "backends/grouped/tma_map.h"
#include "core/cuda_check.h"
#include "eplb/expert_tensors.h"
#include "moe/errors.h"
#include "quant/formats.h"

namespace moe::grouped {
namespace {

// A [rows, cols] host tensor of `dtype` from the source, checked.
TensorView fetch_matrix(WeightSource& source, int expert, Proj proj, DType dtype, int64_t rows,
                        int64_t cols) {
  const TensorView t = source.expert_tensor(expert, proj, Part::kWeight);
  const std::string name = expert_tensor_name(expert, proj, Part::kWeight);
  MOE_CHECK(!t.empty(), name, ": missing from ", source.describe());
  check_tensor(t, name, dtype, {rows, cols});
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(), name, ": expected a contiguous host tensor");
  return t;
}

// Throws unless the e4m3 block rows [row0, row0 + rows) x columns [col0, col0 + cols) of
// `t` [*, ld] hold no NaN code; other dtypes have no check here.
void check_e4m3_block(const TensorView& t, const std::string& name, int64_t row0, int64_t rows,
                      int64_t col0, int64_t cols) {
  if (t.dtype() != DType::kE4M3) return;
  const int64_t ld = t.size(1);
  for (int64_t r = row0; r < row0 + rows; ++r) {
    const int64_t c = find_e4m3_nan(t.data_as<const uint8_t>() + r * ld + col0, cols);
    MOE_CHECK(c < 0, name, "[", r, ", ", col0 + c, "] is an e4m3 NaN: weights must be finite");
  }
}

// Bias [n] as floats, or empty when the source has none.
std::vector<float> fetch_bias(WeightSource& source, int expert, Proj proj, int64_t n) {
  const TensorView t = source.expert_tensor(expert, proj, Part::kBias);
  if (t.empty()) return {};
  const std::string name = expert_tensor_name(expert, proj, Part::kBias);
  MOE_CHECK(t.ndim() == 1 && t.size(0) == n, name, ": expected [", n, "], got ", t.str());
  std::vector<float> b(n);
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype()) {
      case DType::kF32:
        b[i] = t.data_as<float>()[i];
        break;
      case DType::kBF16:
        b[i] = fmt::bf16_to_float(t.data_as<uint16_t>()[i]);
        break;
      default:
        MOE_THROW(name, ": bias must be f32 or bf16, got ", t.str());
    }
  }
  return b;
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  MOE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

}  // namespace

void load_group_weights(WeightSource& source, LoadMode mode, const MoeConfig& config, DType dtype,
                        int expert, int shared_part, const GroupWeightPtrs& dst) {
  const int64_t h = config.hidden_size, inter = config.intermediate_size;
  const int64_t src_inter = expert == kSharedExpert ? config.shared_intermediate_size : inter;
  const int64_t row0 = shared_part * inter;  // this group's rows of the (shared) MLP
  const int64_t elem = dtype_bits(dtype) / 8;
  MOE_CHECK(row0 + inter <= src_inter, "grouped: part ", shared_part, " of ", inter,
            " rows exceeds the ", src_inter, " rows of expert ", expert);

  // FC1: gate and up rows into the interleaved layout W13 [2I, H].
  std::vector<uint8_t> w13(2 * inter * h * elem);
  std::vector<float> b13(2 * inter, 0.0f);
  auto place_bias = [&](const std::vector<float>& b, bool up, int64_t offset) {
    if (b.empty()) return;
    for (int64_t i = 0; i < inter; ++i) b13[fc1_stored_row(up, i)] = b[offset + row0 + i];
  };
  auto place = [&](const TensorView& t, Proj proj, int64_t first_row, bool up) {
    check_e4m3_block(t, expert_tensor_name(expert, proj, Part::kWeight), first_row, inter, 0, h);
    place_fc1_rows(t.data_as<const uint8_t>(), up, first_row, inter, h * elem, w13.data());
  };
  // NOTE: a source may reuse its buffer on every call: each view is used (or copied) before
  // the next request.
  if (mode == LoadMode::kFusedGateUpProj) {
    if (dst.b13 != nullptr) {
      const std::vector<float> b = fetch_bias(source, expert, Proj::kGateUp, 2 * src_inter);
      place_bias(b, false, 0);
      place_bias(b, true, src_inter);
    }
    const TensorView gu = fetch_matrix(source, expert, Proj::kGateUp, dtype, 2 * src_inter, h);
    place(gu, Proj::kGateUp, row0, false);
    place(gu, Proj::kGateUp, src_inter + row0, true);
  } else {
    for (const bool up : {false, true}) {
      const Proj proj = up ? Proj::kUp : Proj::kGate;
      if (dst.b13 != nullptr) place_bias(fetch_bias(source, expert, proj, src_inter), up, 0);
      place(fetch_matrix(source, expert, proj, dtype, src_inter, h), proj, row0, up);
    }
  }
  copy_to_device(dst.w13, w13.data(), w13.size());
  if (dst.b13 != nullptr) copy_to_device(dst.b13, b13.data(), b13.size() * sizeof(float));

  // FC2: this group's columns of W2 [H, src_inter]. The down bias belongs to the whole MLP:
  // it is added once (group part 0).
  if (dst.b2 != nullptr) {
    std::vector<float> b2 = fetch_bias(source, expert, Proj::kDown, h);
    if (b2.empty() || shared_part > 0) b2.assign(h, 0.0f);
    copy_to_device(dst.b2, b2.data(), b2.size() * sizeof(float));
  }
  const TensorView d = fetch_matrix(source, expert, Proj::kDown, dtype, h, src_inter);
  check_e4m3_block(d, expert_tensor_name(expert, Proj::kDown, Part::kWeight), 0, h, row0, inter);
  std::vector<uint8_t> w2(h * inter * elem);  // [H, I]
  copy_fc2_columns(d.data_as<const uint8_t>(), h, src_inter * elem, row0 * elem, inter * elem,
                   w2.data());
  copy_to_device(dst.w2, w2.data(), w2.size());
}

Grouped16BitQuantMethod::Grouped16BitQuantMethod(const MoeConfig& config, int expert_begin,
                                                 int num_local_experts, int num_shared_groups)
    : config_(config),
      dtype_(config.quant == QuantMode::kFP16 ? DType::kF16 : DType::kBF16),
      expert_begin_(expert_begin),
      num_local_(num_local_experts),
      num_shared_(num_shared_groups),
      has_bias_(config.has_expert_biases) {}

void Grouped16BitQuantMethod::create_weights() {
  const int64_t g = num_groups(), h = config_.hidden_size, inter = config_.intermediate_size;
  const Device dev = Device::cuda(0);
  w13_ = Tensor::empty({g, 2 * inter, h}, dtype_, dev);  // [G, 2I, H]
  w2_ = Tensor::empty({g, h, inter}, dtype_, dev);       // [G, H, I]
  if (has_bias_) {
    b13_ = Tensor::empty({g, 2 * inter}, DType::kF32, dev);  // [G, 2I]
    b2_ = Tensor::empty({g, h}, DType::kF32, dev);           // [G, H]
  }
  loaded_ = false;
}

void Grouped16BitQuantMethod::load_weights(WeightSource& source, LoadMode mode) {
  MOE_CHECK(w13_.defined(), "grouped: load_weights before create_weights");
  const int64_t h = config_.hidden_size, inter = config_.intermediate_size;
  for (int group = 0; group < num_groups(); ++group) {
    const bool shared = group >= num_local_;
    GroupWeightPtrs dst;
    dst.w13 = static_cast<uint16_t*>(w13_.data()) + group * 2 * inter * h;
    dst.w2 = static_cast<uint16_t*>(w2_.data()) + group * h * inter;
    if (has_bias_) {
      dst.b13 = b13_.data_as<float>() + group * 2 * inter;
      dst.b2 = b2_.data_as<float>() + group * h;
    }
    load_group_weights(source, mode, config_, dtype_,
                       shared ? kSharedExpert : expert_begin_ + group,
                       shared ? group - num_local_ : 0, dst);
  }
}

void Grouped16BitQuantMethod::process_weights_after_loading() {
  const int64_t g = num_groups(), h = config_.hidden_size, inter = config_.intermediate_size;
  w13_map_ = make_weight_map(w13_.data(), dtype_, g, 2 * inter, h);
  w2_map_ = make_weight_map(w2_.data(), dtype_, g, h, inter);
  loaded_ = true;
}

void Grouped16BitQuantMethod::register_eplb_tensors(ExpertTensorRegistry& registry) {
  registry.add_rows("w13", w13_);
  registry.add_rows("w2", w2_);
  if (has_bias_) {
    registry.add_rows("b13", b13_);
    registry.add_rows("b2", b2_);
  }
  registry.set_support(EplbSupport::kSupported);
}

}  // namespace moe::grouped
