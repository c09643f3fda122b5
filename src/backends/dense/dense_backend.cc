// The dense backend (contract in dense_backend.h).
#include "backends/dense/dense_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <memory>

#include "backends/dense/dense_capability.h"
#include "backends/dense/dense_gemm.h"
#include "backends/dense/dense_kernels.h"
#include "backends/dense/dense_layout.h"
#include "backends/dense/dense_quant_method.h"
#include "core/cuda_check.h"
#include "eplb/expert_tensors.h"
#include "moe/errors.h"
#include "quant/fp8_quant_kernels.h"

namespace moe {
namespace {

using dense::DenseDims;
using dense::GemmScaling;
using dense::Variant;

/// cuBLASLt workspace, allocated once (NVIDIA's recommendation for Hopper: 32 MiB).
constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;

class DenseBackend final : public MoEBackend {
 public:
  DenseBackend(const MoeConfig& c, const Mapping& m, const DeviceInfo& d)
      : config_(checked(c, m, d)),
        dims_{c.num_experts / m.ep_size, c.hidden_size, c.intermediate_size,
              c.num_shared_experts > 0 ? c.shared_intermediate_size : 0},
        expert_begin_(m.ep_rank * dims_.num_experts),
        chunk_(dense::dense_chunk_tokens(dims_, c.max_num_tokens)),
        device_(Device::cuda(d.device_index)) {
    quant_ = dense::make_dense_quant_method(c, dims_, expert_begin_, chunk_, device_);
    fp8_ = quant_->intermediate_format() != dense::IntermediateFormat::kAct16;
    out_f32_ = fp8_ || c.has_expert_biases;
  }

  std::string_view name() const override { return "dense"; }
  SchedulerKind scheduler_kind() const override { return SchedulerKind::kExternalComm; }
  bool supports_load_balancer() const override { return true; }
  void register_eplb_tensors(ExpertTensorRegistry& registry) override {
    registry.set_support(EplbSupport::kNotSupported,
                         "the dense layout keeps an expert's down projection as columns strided "
                         "across every expert's W2 (dense_layout.h), and online migration moves "
                         "contiguous slot bytes; static placements work");
  }
  Device device() const override { return device_; }

  void create_weights() override {
    quant_->create_weights();
    const int64_t c = chunk_, n1 = dims_.n1(), k2 = dims_.k2(), h = dims_.hidden;
    fc1_out_ = Tensor::empty({c, n1}, DType::kF32, device_);                       // [C, N1]
    inter_ = Tensor::empty({c, k2}, quant_->gemm_act_dtype(), device_);            // [C, K2]
    if (fp8_) inter_scales_ = Tensor::empty({k2 / 128, c}, DType::kF32, device_);  // [K2/128, C]
    if (out_f32_) y_ = Tensor::empty({c, h}, DType::kF32, device_);                // [C, H]
    workspace_ = Tensor::empty({static_cast<int64_t>(kGemmWorkspaceBytes)}, DType::kU8, device_);
    if (!lt_) lt_ = std::make_unique<dense::LtHandle>();
    for (int v = 0; v < dense::kNumVariants; ++v) {
      fc1_[v].reset();
      fc2_[v].reset();
      if (!dense::variant_exists(dims_, static_cast<Variant>(v))) continue;
      fc1_[v] = std::make_unique<dense::LtGemm>(lt_->get(), fc1_desc(static_cast<Variant>(v)));
      fc2_[v] = std::make_unique<dense::LtGemm>(lt_->get(), fc2_desc(static_cast<Variant>(v)));
    }
  }
  void load_weights(WeightSource& source, LoadMode mode) override {
    quant_->load_weights(source, mode);
  }
  void post_load_weights() override {}
  void process_weights_after_loading() override { quant_->process_weights_after_loading(); }
  void pre_reload_weights() override { quant_->pre_reload_weights(); }

  size_t workspace_bytes(int max_tokens) const override {
    const size_t c = static_cast<size_t>(dense::dense_chunk_tokens(dims_, max_tokens));
    const size_t act = dtype_bytes(quant_->gemm_act_dtype(), 1);
    size_t bytes = c * dims_.n1() * 4 + c * dims_.k2() * act + kGemmWorkspaceBytes;
    // fp8: the intermediate's scales; x in e4m3 (all tokens) and its scales in both layouts.
    if (fp8_) {
      const size_t t = static_cast<size_t>(dense::round_up(max_tokens, dense::kFp8TokenAlign));
      bytes += c * (dims_.k2() / 128) * 4 + t * dims_.hidden + (t + c) * (dims_.hidden / 128) * 4;
    }
    if (out_f32_) bytes += c * dims_.hidden * 4;
    return bytes;
  }

  QuantizedInput quantize_input(const TensorView& x, void* stream) override {
    MOE_CHECK(quant_->loaded(), "dense: quantize_input before the weights were loaded");
    return quant_->quantize_input(x, static_cast<cudaStream_t>(stream));
  }

  void run_moe(const RunMoeArgs& a, void* stream_ptr) override {
    MOE_CHECK(quant_->loaded(), "dense: run_moe before the weights were loaded");
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    MOE_CHECK(a.x.data.ndim() == 2, "dense: x must be [T, H], got ", a.x.data.str());
    const int64_t t = a.x.data.size(0), h = dims_.hidden;
    MOE_CHECK(a.out.ndim() == 2 && a.out.size(0) == t && a.out.size(1) == h &&
                  a.out.dtype() == config_.act_dtype && a.out.device().is_cuda() &&
                  a.out.is_contiguous(),
              "dense: out must be a contiguous ", dtype_name(config_.act_dtype), "[", t, ", ", h,
              "] on the GPU, got ", a.out.str());
    MOE_CHECK(!a.with_shared || dims_.shared_inter > 0,
              "dense: with_shared, but the layer has no shared experts (num_shared_experts = 0)");
    if (a.with_routed) {
      for (const TensorView* r : {&a.topk_ids, &a.topk_weights}) {
        MOE_CHECK(r->ndim() == 2 && r->size(0) == t && r->size(1) == config_.top_k &&
                      r->device().is_cuda() && r->is_contiguous(),
                  "dense: topk ids/weights must be contiguous [", t, ", ", config_.top_k,
                  "] on the GPU, got ", r->str());
      }
      MOE_CHECK(a.topk_ids.dtype() == DType::kI32 && a.topk_weights.dtype() == DType::kF32,
                "dense: topk_ids must be i32 and topk_weights f32, got ", a.topk_ids.str(), " and ",
                a.topk_weights.str());
    }
    if (t == 0) return;
    if (!a.with_routed && !a.with_shared) {
      // Nothing to compute: out = 0, or out unchanged when accumulating.
      if (!a.accumulate) MOE_CUDA_CHECK(cudaMemsetAsync(a.out.data(), 0, a.out.nbytes(), stream));
      return;
    }
    const Variant v = !a.with_shared  ? Variant::kRouted
                      : a.with_routed ? Variant::kRoutedAndShared
                                      : Variant::kShared;
    // NOTE: chunks only past chunk_ tokens (dense is chosen for far fewer): each reuses the
    // same buffers, in stream order.
    for (int64_t row0 = 0; row0 < t; row0 += chunk_) {
      run_chunk(a, v, row0, std::min(chunk_, t - row0), stream);
    }
  }

 private:
  /// The config, once can_implement said yes (before anything is derived from it).
  static const MoeConfig& checked(const MoeConfig& c, const Mapping& m, const DeviceInfo& d) {
    const Capability cap = dense_can_implement(c, m, d);
    MOE_CHECK(cap.ok, "dense backend: ", cap.reason);
    return c;
  }

  /// FC1 -> activation -> FC2 (-> finalize) for rows [row0, row0 + rows) of the call.
  void run_chunk(const RunMoeArgs& a, Variant v, int64_t row0, int64_t rows, cudaStream_t stream) {
    const dense::VariantRange r = dense::variant_range(dims_, v);
    const int64_t h = dims_.hidden, k = config_.top_k;
    const int64_t rows_g = dense::round_up(rows, quant_->token_align());  // GEMM token count
    const size_t w_elem = dtype_bytes(quant_->weight_dtype(), 1);
    const size_t a_elem = dtype_bytes(quant_->gemm_act_dtype(), 1);
    const size_t out_elem = dtype_bytes(config_.act_dtype, 1);
    void* out = static_cast<char*>(a.out.data()) + row0 * h * out_elem;  // [rows, H]
    const int32_t* ids = a.with_routed ? a.topk_ids.data_as<int32_t>() + row0 * k : nullptr;
    const float* weights = a.with_routed ? a.topk_weights.data_as<float>() + row0 * k : nullptr;

    // FC1 over the variant's rows of W13.
    const dense::GemmInput in = quant_->gemm_input(a.x, row0, rows, stream);
    dense::GemmArgs g1;
    g1.w = static_cast<const char*>(quant_->w13()) + r.n_begin * h * w_elem;
    if (quant_->fc1_scaling() == GemmScaling::kBlock) {
      g1.w_scale = quant_->w13_block_scales() + (r.n_begin / 128) * quant::fp8_scale_ld(h / 128);
    }
    g1.x = in.data;
    g1.x_scale = in.scale;
    g1.out = fc1_out_.data_as<float>() + r.n_begin;
    g1.tokens = rows_g;
    g1.workspace = workspace_.data();
    fc1_[static_cast<int>(v)]->run(g1, stream);

    // Activation and routing weight into the intermediate.
    dense::ActivationParams act;
    act.fc1_out = fc1_out_.data_as<float>();
    act.n1 = dims_.n1();
    act.rows = rows_g;
    act.tokens = rows;
    act.topk_ids = ids;
    act.topk_weights = weights;
    act.top_k = config_.top_k;
    act.num_experts = dims_.num_experts;
    act.expert_begin = expert_begin_;
    act.inter = dims_.inter;
    act.shared_inter = dims_.shared_inter;
    act.with_routed = a.with_routed;
    act.with_shared = a.with_shared;
    act.gate_scale = quant_->gate_scales();
    act.up_scale = quant_->up_scales();
    act.bias13 = quant_->b13();
    act.activation = config_.activation;
    act.oai = config_.swiglu_oai;
    act.format = quant_->intermediate_format();
    act.act_dtype = config_.act_dtype;
    act.out = inter_.data();
    act.k2 = dims_.k2();
    act.out_scales = fp8_ ? inter_scales_.data_as<float>() : nullptr;
    act.intermediate_scale = quant_->intermediate_scale();
    dense::launch_dense_activation(act, r.k_begin, r.k_end, stream);

    // FC2 over the variant's columns of W2: the sum over experts.
    dense::GemmArgs g2;
    g2.w = static_cast<const char*>(quant_->w2()) + r.k_begin * w_elem;
    if (quant_->fc2_scaling() == GemmScaling::kBlock) g2.w_scale = quant_->w2_block_scales(v);
    g2.x = static_cast<const char*>(inter_.data()) + r.k_begin * a_elem;
    if (fp8_) g2.x_scale = inter_scales_.data_as<float>() + (r.k_begin / 128) * rows_g;
    g2.out = out_f32_ ? y_.data() : out;
    g2.accumulate = !out_f32_ && a.accumulate;
    g2.tokens = rows_g;
    g2.workspace = workspace_.data();
    fc2_[static_cast<int>(v)]->run(g2, stream);

    if (out_f32_) {
      dense::FinalizeParams fin;
      fin.y = y_.data_as<float>();
      fin.out = out;
      fin.act_dtype = config_.act_dtype;
      fin.tokens = rows;
      fin.hidden = h;
      fin.topk_ids = ids;
      fin.topk_weights = weights;
      fin.top_k = config_.top_k;
      fin.num_experts = dims_.num_experts;
      fin.expert_begin = expert_begin_;
      fin.bias2 = quant_->b2();
      fin.with_routed = a.with_routed;
      fin.accumulate = a.accumulate;
      dense::launch_dense_finalize(fin, stream);
    }
  }

  dense::GemmDesc fc1_desc(Variant v) const {
    const dense::VariantRange r = dense::variant_range(dims_, v);
    dense::GemmDesc d;
    d.name = "dense fc1 (" + variant_name(v) + ")";
    d.w_dtype = quant_->weight_dtype();
    d.x_dtype = quant_->gemm_act_dtype();
    d.out_dtype = DType::kF32;
    d.n = r.n_end - r.n_begin;
    d.k = dims_.hidden;
    d.ld_w = dims_.hidden;
    d.ld_x = dims_.hidden;
    d.ld_out = dims_.n1();
    d.scaling = quant_->fc1_scaling();
    d.max_tokens = chunk_;
    d.token_align = quant_->token_align();
    d.workspace_bytes = kGemmWorkspaceBytes;
    return d;
  }

  dense::GemmDesc fc2_desc(Variant v) const {
    const dense::VariantRange r = dense::variant_range(dims_, v);
    dense::GemmDesc d;
    d.name = "dense fc2 (" + variant_name(v) + ")";
    d.w_dtype = quant_->weight_dtype();
    d.x_dtype = quant_->gemm_act_dtype();
    d.out_dtype = out_f32_ ? DType::kF32 : config_.act_dtype;
    d.n = dims_.hidden;
    d.k = r.k_end - r.k_begin;
    d.ld_w = dims_.k2();
    d.ld_x = dims_.k2();
    d.ld_out = dims_.hidden;
    d.scaling = quant_->fc2_scaling();
    d.max_tokens = chunk_;
    d.token_align = quant_->token_align();
    d.workspace_bytes = kGemmWorkspaceBytes;
    return d;
  }

  static std::string variant_name(Variant v) {
    switch (v) {
      case Variant::kRouted:
        return "routed";
      case Variant::kShared:
        return "shared";
      case Variant::kRoutedAndShared:
        break;
    }
    return "routed + shared";
  }

  MoeConfig config_;
  DenseDims dims_;
  int expert_begin_;
  int64_t chunk_;  // tokens per pass (dense_chunk_tokens)
  Device device_;
  std::unique_ptr<dense::DenseQuantMethod> quant_;
  bool fp8_ = false;
  bool out_f32_ = false;  // FC2 writes f32 into y_ and finalize rounds into out
  std::unique_ptr<dense::LtHandle> lt_;
  std::array<std::unique_ptr<dense::LtGemm>, dense::kNumVariants> fc1_, fc2_;
  Tensor fc1_out_, inter_, inter_scales_, y_, workspace_;
};

}  // namespace

const BackendEntry& dense_backend_entry() {
  static const BackendEntry entry{
      "dense", dense_can_implement,
      [](const MoeConfig& c, const Mapping& m, const DeviceInfo& d) -> std::unique_ptr<MoEBackend> {
        return std::make_unique<DenseBackend>(c, m, d);
      }};
  return entry;
}

}  // namespace moe
