// The dense backend's quant methods (contract in dense_quant_method.h): the common loading of
// the stacked layout, then one class per mode and the one dispatch point
// make_dense_quant_method().
#include "backends/dense/dense_quant_method.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "moe/errors.h"
#include "quant/formats.h"
#include "quant/fp8_quant_kernels.h"

namespace moe::dense {
namespace {

constexpr int64_t kBlock = quant::kFp8GroupSize;

void copy_to_device(void* dst, const void* src, size_t bytes) {
  MOE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

template <class T>
Tensor upload(const std::vector<T>& host, std::initializer_list<int64_t> shape, DType dtype,
              Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  MOE_CHECK(t.nbytes() == host.size() * sizeof(T), "dense: upload of ", t.view().str(), " from ",
            host.size(), " values");
  copy_to_device(t.data(), host.data(), t.nbytes());
  return t;
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

/// A bias f32 or bf16 [n] as floats.
std::vector<float> read_bias(WeightSource& source, int expert, Proj proj, int64_t n) {
  const TensorView t = fetch(source, expert, proj, Part::kBias);
  const std::string name = expert_tensor_name(expert, proj, Part::kBias);
  MOE_CHECK(
      t.ndim() == 1 && t.size(0) == n && (t.dtype() == DType::kF32 || t.dtype() == DType::kBF16),
      name, ": expected f32[", n, "] or bf16[", n, "], got ", t.str());
  std::vector<float> b(n);
  for (int64_t i = 0; i < n; ++i) {
    b[i] = t.dtype() == DType::kF32 ? t.data_as<float>()[i]
                                    : fmt::bf16_to_float(t.data_as<uint16_t>()[i]);
  }
  return b;
}

/// Throws unless v is a usable scale (finite, > 0).
void check_scale(float v, int expert, Proj proj, Part part, int64_t index) {
  MOE_CHECK(std::isfinite(v) && v > 0.0f, expert_tensor_name(expert, proj, part), "[", index,
            "] = ", v, ": a scale must be finite and > 0");
}

DType weight_dtype_of(QuantMode q) {
  switch (q) {
    case QuantMode::kBF16:
      return DType::kBF16;
    case QuantMode::kFP16:
      return DType::kF16;
    case QuantMode::kFP8PerTensor:
    case QuantMode::kFP8Block:
      return DType::kE4M3;
    default:
      MOE_THROW("dense: quant mode ", quant_mode_name(q), " is not supported");
  }
}

}  // namespace

// ---- Common: the stacked layout ---------------------------------------------------------------

DenseQuantMethod::DenseQuantMethod(const MoeConfig& config, const DenseDims& dims, int expert_begin,
                                   int64_t chunk_tokens, Device device)
    : config_(config),
      dims_(dims),
      expert_begin_(expert_begin),
      chunk_tokens_(chunk_tokens),
      device_(device),
      weight_dtype_(weight_dtype_of(config.quant)),
      has_bias_(config.has_expert_biases) {}

void DenseQuantMethod::create_weights() {
  const int64_t n1 = dims_.n1(), k2 = dims_.k2(), h = dims_.hidden;
  w13_ = Tensor::empty({n1, h}, weight_dtype_, device_);  // [N1, H]
  w2_ = Tensor::empty({h, k2}, weight_dtype_, device_);   // [H, K2]
  if (has_bias_) {
    b13_ = Tensor::empty({n1}, DType::kF32, device_);                   // [N1], shared rows 0
    b2_ = Tensor::empty({dims_.num_experts, h}, DType::kF32, device_);  // [E, H]
    MOE_CUDA_CHECK(cudaMemset(b13_.data(), 0, b13_.nbytes()));
  }
  create_parts();
  loaded_ = false;
}

void DenseQuantMethod::load_weights(WeightSource& source, LoadMode mode) {
  MOE_CHECK(w13_.defined(), "dense: load_weights before create_weights");
  loaded_ = false;
  begin_load();
  for (int seg = 0; seg < dims_.num_segments(); ++seg) load_segment(source, mode, seg);
}

void DenseQuantMethod::load_segment(WeightSource& source, LoadMode mode, int seg) {
  const bool shared = seg == dims_.num_experts;
  const int expert = shared ? kSharedExpert : expert_begin_ + seg;
  const int64_t h = dims_.hidden, inter = dims_.segment_inter(seg);
  const int64_t row0 = dims_.gate_row(seg), col0 = dims_.down_col(seg);
  const size_t elem = dtype_bytes(weight_dtype_, 1);
  const bool with_bias = has_bias_ && !shared;  // NOTE: the shared MLP carries no biases
  auto weight = [&](Proj proj, int64_t rows, int64_t cols) {
    const TensorView t = fetch(source, expert, proj, Part::kWeight);
    check_tensor(t, expert_tensor_name(expert, proj, Part::kWeight), weight_dtype_, {rows, cols});
    return t;
  };
  auto copy_rows = [&](const TensorView& t, int64_t first_row) {
    copy_to_device(static_cast<char*>(w13_.data()) + first_row * h * elem, t.data(), t.nbytes());
  };
  auto copy_bias13 = [&](const std::vector<float>& b, int64_t first_row) {
    copy_to_device(b13_.data_as<float>() + first_row, b.data(), b.size() * sizeof(float));
  };

  // NOTE: a source may reuse its buffer on every call: each view is consumed before the
  // next request.
  if (mode == LoadMode::kFusedGateUpProj) {
    copy_rows(weight(Proj::kGateUp, 2 * inter, h), row0);  // [gate | up] as stacked
    load_parts(source, expert, seg, Proj::kGateUp);
    if (with_bias) copy_bias13(read_bias(source, expert, Proj::kGateUp, 2 * inter), row0);
  } else {
    copy_rows(weight(Proj::kGate, inter, h), row0);
    load_parts(source, expert, seg, Proj::kGate);
    copy_rows(weight(Proj::kUp, inter, h), row0 + inter);
    load_parts(source, expert, seg, Proj::kUp);
    if (with_bias) {
      copy_bias13(read_bias(source, expert, Proj::kGate, inter), row0);
      copy_bias13(read_bias(source, expert, Proj::kUp, inter), row0 + inter);
    }
  }
  // W2 [H, inter] -> columns [col0, col0 + inter) of [H, K2].
  const TensorView down = weight(Proj::kDown, h, inter);
  MOE_CUDA_CHECK(cudaMemcpy2D(static_cast<char*>(w2_.data()) + col0 * elem, dims_.k2() * elem,
                              down.data(), inter * elem, inter * elem, h, cudaMemcpyHostToDevice));
  load_parts(source, expert, seg, Proj::kDown);
  if (with_bias) {
    const std::vector<float> b = read_bias(source, expert, Proj::kDown, h);
    copy_to_device(b2_.data_as<float>() + seg * h, b.data(), b.size() * sizeof(float));
  }
}

void DenseQuantMethod::process_weights_after_loading() {
  MOE_CHECK(w13_.defined(), "dense: process_weights_after_loading before create_weights");
  process_parts();
  loaded_ = true;
}

void DenseQuantMethod::check_x(const TensorView& x, DType dtype, const char* what) const {
  MOE_CHECK(x.ndim() == 2 && x.dtype() == dtype && x.size(1) == dims_.hidden &&
                x.device().is_cuda() && x.is_contiguous(),
            "dense: ", what, " must be a contiguous ", dtype_name(dtype), "[T, ", dims_.hidden,
            "] on the GPU, got ", x.str());
  MOE_CHECK(x.size(0) <= config_.max_num_tokens, "dense: ", what, " has ", x.size(0),
            " tokens, more than max_num_tokens = ", config_.max_num_tokens);
}

std::array<float, 2> DenseQuantMethod::read_scalar_part(WeightSource& source, int expert, Proj proj,
                                                        Part part) const {
  const TensorView t = fetch(source, expert, proj, part);
  const std::string name = expert_tensor_name(expert, proj, part);
  const bool fused = proj == Proj::kGateUp;
  MOE_CHECK(
      t.dtype() == DType::kF32 && t.ndim() == 1 && (t.size(0) == 1 || (fused && t.size(0) == 2)),
      name, ": expected f32[1]", fused ? " or f32[2] (gate, up)" : "", ", got ", t.str());
  const float* v = t.data_as<float>();
  const std::array<float, 2> out = {v[0], v[t.size(0) - 1]};
  for (int i = 0; i < 2; ++i)
    check_scale(out[i], expert, proj, part, std::min<int64_t>(i, t.size(0) - 1));
  return out;
}

namespace {

// ---- bf16 / fp16 ----------------------------------------------------------------------------

class Dense16BitMethod final : public DenseQuantMethod {
 public:
  using DenseQuantMethod::DenseQuantMethod;

  DType gemm_act_dtype() const override { return weight_dtype_; }
  GemmScaling fc1_scaling() const override { return GemmScaling::kNone; }
  GemmScaling fc2_scaling() const override { return GemmScaling::kNone; }
  IntermediateFormat intermediate_format() const override { return IntermediateFormat::kAct16; }

  QuantizedInput quantize_input(const TensorView& x, cudaStream_t) override {
    check_x(x, config_.act_dtype, "quantize_input x");
    return {x, {}};
  }

  GemmInput gemm_input(const QuantizedInput& x, int64_t row0, int64_t, cudaStream_t) override {
    check_x(x.data, config_.act_dtype, "run_moe x");
    MOE_CHECK(x.scales.empty(), "dense ", quant_mode_name(config_.quant), ": x carries scales ",
              x.scales.str(), " but the mode has none");
    return {static_cast<const char*>(x.data.data()) + row0 * dims_.hidden * 2, nullptr};
  }
};

// ---- fp8 common: e4m3 input buffer, block-scaled FC2 ------------------------------------------

class DenseFp8Method : public DenseQuantMethod {
 public:
  using DenseQuantMethod::DenseQuantMethod;

  DType gemm_act_dtype() const override { return DType::kE4M3; }
  GemmScaling fc2_scaling() const override { return GemmScaling::kBlock; }
  int token_align() const override { return kFp8TokenAlign; }
  const float* w2_block_scales(Variant v) const override {
    const Tensor& t = w2_scales_[static_cast<int>(v)];
    MOE_CHECK(t.defined(), "dense: no FC2 scales for variant ", static_cast<int>(v));
    return t.data_as<float>();
  }

 protected:
  int64_t max_gemm_tokens() const { return round_up(config_.max_num_tokens, kFp8TokenAlign); }

  void create_parts() override {
    xq_ = Tensor::empty({max_gemm_tokens(), dims_.hidden}, DType::kE4M3, device_);  // [Tg, H]
    MOE_CUDA_CHECK(cudaMemset(xq_.data(), 0, xq_.nbytes()));
    w2_grid_.assign((dims_.hidden / kBlock) * (dims_.k2() / kBlock), 0.0f);
    create_fp8_parts();
  }
  virtual void create_fp8_parts() {}

  /// Uploads W2's block scales, one tensor per variant, from w2_grid_ [H/128, K2/128].
  void build_w2_scales() {
    const int64_t hb = dims_.hidden / kBlock, kb_all = dims_.k2() / kBlock;
    for (int v = 0; v < kNumVariants; ++v) {
      w2_scales_[v] = Tensor();
      if (!variant_exists(dims_, static_cast<Variant>(v))) continue;
      const VariantRange r = variant_range(dims_, static_cast<Variant>(v));
      const int64_t kb0 = r.k_begin / kBlock, kb = (r.k_end - r.k_begin) / kBlock;
      const int64_t ld = quant::fp8_scale_ld(kb);
      std::vector<float> host(hb * ld, 0.0f);  // [H/128, ld]
      for (int64_t i = 0; i < hb; ++i) {
        std::copy_n(&w2_grid_[i * kb_all + kb0], kb, &host[i * ld]);
      }
      w2_scales_[v] = upload(host, {hb, ld}, DType::kF32, device_);
    }
  }

  /// Row row0 of x's e4m3 rows in xq_ (x copied there at row0 = 0 when it is not xq_ itself;
  /// rows past T stay finite for the padded GEMM rows).
  const void* gemm_rows(const TensorView& data, int64_t row0, cudaStream_t stream) {
    if (row0 == 0 && data.data() != xq_.data()) {
      MOE_CUDA_CHECK(cudaMemcpyAsync(xq_.data(), data.data(), data.nbytes(),
                                     cudaMemcpyDeviceToDevice, stream));
    }
    return xq_.data_as<uint8_t>() + row0 * dims_.hidden;
  }

  Tensor xq_;                   // e4m3 [Tg_max, H], rows past T stay finite
  std::vector<float> w2_grid_;  // [H/128, K2/128] host
  std::array<Tensor, kNumVariants> w2_scales_;
};

// ---- fp8 per tensor ------------------------------------------------------------------------

class DenseFp8PerTensorMethod final : public DenseFp8Method {
 public:
  using DenseFp8Method::DenseFp8Method;

  GemmScaling fc1_scaling() const override { return GemmScaling::kScalar; }
  IntermediateFormat intermediate_format() const override {
    return IntermediateFormat::kFp8PerTensor;
  }
  const float* gate_scales() const override { return gate_dev_.data_as<float>(); }
  const float* up_scales() const override { return up_dev_.data_as<float>(); }
  const float* intermediate_scale() const override { return inter_scale_dev_.data_as<float>(); }

  QuantizedInput quantize_input(const TensorView& x, cudaStream_t stream) override {
    MOE_CHECK(loaded_, "dense fp8_per_tensor: quantize_input before the weights are loaded");
    check_x(x, config_.act_dtype, "quantize_input x");
    const int64_t t = x.size(0);
    quant::Fp8QuantizePerTensorParams p;
    p.x = x.data();
    p.x_dtype = x.dtype();
    p.rows = t;
    p.cols = dims_.hidden;
    p.x_ld = dims_.hidden;
    p.scale = in_scale_dev_.data_as<float>();
    p.q = xq_.data_as<uint8_t>();
    p.q_ld = dims_.hidden;
    quant::launch_fp8_quantize_per_tensor(p, stream);
    return {xq_.view().slice_rows(0, t), in_scale_dev_.view()};
  }

  GemmInput gemm_input(const QuantizedInput& x, int64_t row0, int64_t,
                       cudaStream_t stream) override {
    check_x(x.data, DType::kE4M3, "run_moe x");
    MOE_CHECK(
        x.scales.dtype() == DType::kF32 && x.scales.numel() == 1 && x.scales.device().is_cuda(),
        "dense fp8_per_tensor: x scales must be one f32 on the GPU, got ", x.scales.str());
    return {gemm_rows(x.data, row0, stream), x.scales.data_as<float>()};
  }

 protected:
  void begin_load() override {
    const int g = dims_.num_segments();
    gate_.assign(g, 0.0f);
    up_.assign(g, 0.0f);
    down_.assign(g, 0.0f);
    in_scale_ = 0.0f;
    inter_scale_ = 0.0f;
  }

  void load_parts(WeightSource& source, int expert, int seg, Proj proj) override {
    const std::array<float, 2> w = read_scalar_part(source, expert, proj, Part::kScale);
    const std::array<float, 2> in = read_scalar_part(source, expert, proj, Part::kInputScale);
    switch (proj) {
      case Proj::kGateUp:
        gate_[seg] = w[0];
        up_[seg] = w[1];
        in_scale_ = std::max({in_scale_, in[0], in[1]});
        break;
      case Proj::kGate:
        gate_[seg] = w[0];
        in_scale_ = std::max(in_scale_, in[0]);
        break;
      case Proj::kUp:
        up_[seg] = w[0];
        in_scale_ = std::max(in_scale_, in[0]);
        break;
      case Proj::kDown:
        down_[seg] = w[0];
        inter_scale_ = std::max(inter_scale_, in[0]);
        break;
    }
  }

  void create_fp8_parts() override {
    const int64_t g = dims_.num_segments();
    gate_dev_ = Tensor::empty({g}, DType::kF32, device_);
    up_dev_ = Tensor::empty({g}, DType::kF32, device_);
    in_scale_dev_ = Tensor::empty({1}, DType::kF32, device_);
    inter_scale_dev_ = Tensor::empty({1}, DType::kF32, device_);
  }

  void process_parts() override {
    MOE_CHECK(in_scale_ > 0 && inter_scale_ > 0,
              "dense fp8_per_tensor: static input scales not loaded");
    copy_to_device(gate_dev_.data(), gate_.data(), gate_.size() * sizeof(float));
    copy_to_device(up_dev_.data(), up_.data(), up_.size() * sizeof(float));
    copy_to_device(in_scale_dev_.data(), &in_scale_, sizeof(float));
    copy_to_device(inter_scale_dev_.data(), &inter_scale_, sizeof(float));
    // Every 128x128 block of a segment's down projection has the segment's scale.
    const int64_t hb = dims_.hidden / kBlock, kb_all = dims_.k2() / kBlock;
    for (int seg = 0; seg < dims_.num_segments(); ++seg) {
      const int64_t kb0 = dims_.down_col(seg) / kBlock, kb = dims_.segment_inter(seg) / kBlock;
      for (int64_t i = 0; i < hb; ++i) {
        std::fill_n(&w2_grid_[i * kb_all + kb0], kb, down_[seg]);
      }
    }
    build_w2_scales();
  }

 private:
  std::vector<float> gate_, up_, down_;  // per segment weight scales (host)
  float in_scale_ = 0, inter_scale_ = 0;
  Tensor gate_dev_, up_dev_, in_scale_dev_, inter_scale_dev_;
};

// ---- fp8 block (DeepSeek 128x128 weights, 1x128 activations) ---------------------------------

class DenseFp8BlockMethod final : public DenseFp8Method {
 public:
  using DenseFp8Method::DenseFp8Method;

  GemmScaling fc1_scaling() const override { return GemmScaling::kBlock; }
  IntermediateFormat intermediate_format() const override { return IntermediateFormat::kFp8Block; }
  const float* w13_block_scales() const override { return w13_scales_.data_as<float>(); }

  QuantizedInput quantize_input(const TensorView& x, cudaStream_t stream) override {
    check_x(x, config_.act_dtype, "quantize_input x");
    const int64_t t = x.size(0);
    quant::Fp8Quantize1x128Params p;
    p.x = x.data();
    p.x_dtype = x.dtype();
    p.rows = t;
    p.cols = dims_.hidden;
    p.x_ld = dims_.hidden;
    p.q = xq_.data_as<uint8_t>();
    p.q_ld = dims_.hidden;
    p.scales = xs_.data_as<float>();
    // One pass of run_moe: the GEMM layout of the scales comes out of this kernel directly.
    if (t <= chunk_tokens_) {
      p.scales_gemm = xs_gemm_.data_as<float>();
      p.scales_gemm_ld = round_up(t, kFp8TokenAlign);
    }
    quant::launch_fp8_quantize_1x128(p, stream);
    last_quantized_tokens_ = t <= chunk_tokens_ ? t : -1;
    return {xq_.view().slice_rows(0, t), xs_.view().slice_rows(0, t)};
  }

  GemmInput gemm_input(const QuantizedInput& x, int64_t row0, int64_t rows,
                       cudaStream_t stream) override {
    check_x(x.data, DType::kE4M3, "run_moe x");
    const int64_t t = x.data.size(0), groups = dims_.hidden / kBlock;
    MOE_CHECK(x.scales.ndim() == 2 && x.scales.dtype() == DType::kF32 && x.scales.size(0) == t &&
                  x.scales.size(1) == groups && x.scales.device().is_cuda() &&
                  x.scales.is_contiguous(),
              "dense fp8_block: x scales must be a contiguous f32[", t, ", ", groups,
              "] on the GPU, got ", x.scales.str());
    MOE_CHECK(rows <= chunk_tokens_ && row0 + rows <= t, "dense fp8_block: rows [", row0, ", ",
              row0 + rows, ") of ", t, " exceed a pass of ", chunk_tokens_);
    // quantize_input already wrote the GEMM layout when x is its own output in one pass.
    const bool fresh = row0 == 0 && rows == t && x.data.data() == xq_.data() &&
                       x.scales.data() == xs_.data() && t == last_quantized_tokens_;
    const void* data = gemm_rows(x.data, row0, stream);
    if (!fresh) {
      quant::launch_fp8_scales_to_gemm_layout(x.scales.data_as<float>() + row0 * groups, rows,
                                              groups, xs_gemm_.data_as<float>(),
                                              round_up(rows, kFp8TokenAlign), stream);
    }
    return {data, xs_gemm_.data_as<float>()};
  }

 protected:
  void begin_load() override {
    const int64_t ld = quant::fp8_scale_ld(dims_.hidden / kBlock);
    w13_grid_.assign((dims_.n1() / kBlock) * ld, 0.0f);
    std::fill(w2_grid_.begin(), w2_grid_.end(), 0.0f);
  }

  void load_parts(WeightSource& source, int expert, int seg, Proj proj) override {
    const int64_t inter = dims_.segment_inter(seg), h = dims_.hidden;
    const int64_t rows = proj == Proj::kDown ? h : (proj == Proj::kGateUp ? 2 * inter : inter);
    const int64_t cols = proj == Proj::kDown ? inter : h;
    const TensorView t = fetch(source, expert, proj, Part::kScale);
    check_tensor(t, expert_tensor_name(expert, proj, Part::kScale), DType::kF32,
                 {rows / kBlock, cols / kBlock});
    const float* s = t.data_as<float>();
    for (int64_t i = 0; i < t.numel(); ++i) check_scale(s[i], expert, proj, Part::kScale, i);
    if (proj == Proj::kDown) {
      const int64_t kb_all = dims_.k2() / kBlock, kb0 = dims_.down_col(seg) / kBlock;
      for (int64_t i = 0; i < rows / kBlock; ++i) {
        std::copy_n(s + i * (cols / kBlock), cols / kBlock, &w2_grid_[i * kb_all + kb0]);
      }
      return;
    }
    const int64_t ld = quant::fp8_scale_ld(h / kBlock);
    const int64_t row0 = dims_.gate_row(seg) + (proj == Proj::kUp ? inter : 0);
    for (int64_t i = 0; i < rows / kBlock; ++i) {
      std::copy_n(s + i * (h / kBlock), h / kBlock, &w13_grid_[(row0 / kBlock + i) * ld]);
    }
  }

  void create_fp8_parts() override {
    const int64_t groups = dims_.hidden / kBlock;
    w13_scales_ =
        Tensor::empty({dims_.n1() / kBlock, quant::fp8_scale_ld(groups)}, DType::kF32, device_);
    xs_ = Tensor::empty({config_.max_num_tokens, groups}, DType::kF32, device_);  // [T, H/128]
    xs_gemm_ = Tensor::empty({groups, chunk_tokens_}, DType::kF32, device_);      // [H/128, chunk]
    MOE_CUDA_CHECK(cudaMemset(xs_gemm_.data(), 0, xs_gemm_.nbytes()));
  }

  void process_parts() override {
    copy_to_device(w13_scales_.data(), w13_grid_.data(), w13_grid_.size() * sizeof(float));
    build_w2_scales();
  }

 private:
  std::vector<float> w13_grid_;  // [N1/128, fp8_scale_ld(H/128)] host
  Tensor w13_scales_, xs_, xs_gemm_;
  int64_t last_quantized_tokens_ = -1;
};

}  // namespace

std::unique_ptr<DenseQuantMethod> make_dense_quant_method(const MoeConfig& config,
                                                          const DenseDims& dims, int expert_begin,
                                                          int64_t chunk_tokens, Device device) {
  switch (config.quant) {
    case QuantMode::kBF16:
    case QuantMode::kFP16:
      return std::make_unique<Dense16BitMethod>(config, dims, expert_begin, chunk_tokens, device);
    case QuantMode::kFP8PerTensor:
      return std::make_unique<DenseFp8PerTensorMethod>(config, dims, expert_begin, chunk_tokens,
                                                       device);
    case QuantMode::kFP8Block:
      return std::make_unique<DenseFp8BlockMethod>(config, dims, expert_begin, chunk_tokens,
                                                   device);
    default:
      MOE_THROW("dense: quant mode ", quant_mode_name(config.quant), " is not supported");
  }
}

}  // namespace moe::dense
