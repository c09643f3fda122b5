#include "backends/grouped/grouped_quant_method.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <vector>

#include "backends/grouped/grouped_layout.h"
#include "backends/grouped/tma_map.h"
#include "core/cuda_check.h"
#include "moe/errors.h"
#include "quant/formats.h"

namespace moe::grouped {
namespace {

// A [rows, cols] 16-bit host tensor from the source, checked.
TensorView fetch_matrix(WeightSource& source, int expert, Proj proj, DType dtype, int64_t rows,
                        int64_t cols) {
  const TensorView t = source.expert_tensor(expert, proj, Part::kWeight);
  const std::string name = expert_tensor_name(expert, proj, Part::kWeight);
  MOE_CHECK(!t.empty(), name, ": missing from ", source.describe());
  check_tensor(t, name, dtype, {rows, cols});
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(), name, ": expected a contiguous host tensor");
  return t;
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
  for (int i = 0; i < num_local_; ++i) load_group(source, mode, expert_begin_ + i, i, 0);
  for (int s = 0; s < num_shared_; ++s) load_group(source, mode, kSharedExpert, num_local_ + s, s);
}

void Grouped16BitQuantMethod::load_group(WeightSource& source, LoadMode mode, int expert, int group,
                                         int shared_part) {
  const int64_t h = config_.hidden_size, inter = config_.intermediate_size;
  const bool shared = expert == kSharedExpert;
  const int64_t src_inter = shared ? config_.shared_intermediate_size : inter;
  const int64_t row0 = shared_part * inter;  // this group's rows of the (shared) MLP

  // FC1: gather gate and up rows into the interleaved layout.
  std::vector<uint16_t> w13(2 * inter * h);
  std::vector<float> b13(2 * inter, 0.0f);
  auto place = [&](const uint16_t* gate, const uint16_t* up, const std::vector<float>& bg,
                   const std::vector<float>& bu) {
    for (int64_t r = 0; r < 2 * inter; ++r) {
      const SourceRow s = fc1_source_row(r);
      const uint16_t* src = (s.up ? up : gate) + (row0 + s.row) * h;
      std::memcpy(&w13[r * h], src, h * sizeof(uint16_t));
      const auto& b = s.up ? bu : bg;
      if (!b.empty()) b13[r] = b[row0 + s.row];
    }
  };
  // NOTE: a source may reuse its buffer on every call: biases (copied) first, then each
  // matrix is used (or copied) before the next request.
  if (mode == LoadMode::kFusedGateUpProj) {
    const std::vector<float> b = fetch_bias(source, expert, Proj::kGateUp, 2 * src_inter);
    std::vector<float> bg, bu;
    if (!b.empty()) {
      bg.assign(b.begin(), b.begin() + src_inter);
      bu.assign(b.begin() + src_inter, b.end());
    }
    const TensorView gu = fetch_matrix(source, expert, Proj::kGateUp, dtype_, 2 * src_inter, h);
    const auto* base = gu.data_as<const uint16_t>();
    place(base, base + src_inter * h, bg, bu);
  } else {
    const std::vector<float> bg = fetch_bias(source, expert, Proj::kGate, src_inter);
    const std::vector<float> bu = fetch_bias(source, expert, Proj::kUp, src_inter);
    const TensorView g = fetch_matrix(source, expert, Proj::kGate, dtype_, src_inter, h);
    const std::vector<uint16_t> gate(g.data_as<const uint16_t>(),
                                     g.data_as<const uint16_t>() + g.numel());
    const TensorView u = fetch_matrix(source, expert, Proj::kUp, dtype_, src_inter, h);
    place(gate.data(), u.data_as<const uint16_t>(), bg, bu);
  }
  copy_to_device(static_cast<uint16_t*>(w13_.data()) + group * 2 * inter * h, w13.data(),
                 w13.size() * sizeof(uint16_t));

  // FC2: this group's columns of W2 [H, src_inter]. The down bias belongs to the whole MLP:
  // it is added once (group part 0).
  std::vector<float> b2 =
      has_bias_ ? fetch_bias(source, expert, Proj::kDown, h) : std::vector<float>{};
  if (b2.empty() || shared_part > 0) b2.assign(h, 0.0f);
  const TensorView d = fetch_matrix(source, expert, Proj::kDown, dtype_, h, src_inter);
  std::vector<uint16_t> w2(h * inter);
  for (int64_t r = 0; r < h; ++r) {
    std::memcpy(&w2[r * inter], d.data_as<const uint16_t>() + r * src_inter + row0,
                inter * sizeof(uint16_t));
  }
  copy_to_device(static_cast<uint16_t*>(w2_.data()) + group * h * inter, w2.data(),
                 w2.size() * sizeof(uint16_t));

  if (has_bias_) {
    copy_to_device(b13_.data_as<float>() + group * 2 * inter, b13.data(), b13.size() * 4);
    copy_to_device(b2_.data_as<float>() + group * h, b2.data(), b2.size() * 4);
  }
}

void Grouped16BitQuantMethod::process_weights_after_loading() {
  const int64_t g = num_groups(), h = config_.hidden_size, inter = config_.intermediate_size;
  w13_map_ = make_weight_map(w13_.data(), dtype_, g, 2 * inter, h);
  w2_map_ = make_weight_map(w2_.data(), dtype_, g, h, inter);
  loaded_ = true;
}

}  // namespace moe::grouped
