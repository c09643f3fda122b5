#include "backends/grouped/grouped_backend.h"

#include <cuda_runtime_api.h>

#include <array>
#include <cstdlib>
#include <memory>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/grouped_quant_method.h"
#include "backends/grouped/moe_kernels.h"
#include "backends/grouped/tma_map.h"
#include "moe/errors.h"

namespace moe {
namespace {

using grouped::GemmConfig;

constexpr int kMaxGroups = 1024;  // plan kernel limit
constexpr std::array<int, 6> kAllBlockNs = {8, 16, 32, 64, 128, 256};

int shared_groups(const MoeConfig& c) {
  return c.num_shared_experts > 0 ? c.shared_intermediate_size / c.intermediate_size : 0;
}

Capability can_implement(const MoeConfig& c, const Mapping& m, const DeviceInfo& d) {
  if (!d.cuda_built) return Capability::no("built without CUDA");
  if (!d.has_cuda) return Capability::no("no CUDA device found");
  if (d.sm_major != 9) {
    return Capability::no("needs a Hopper GPU (sm_90a: TMA + wgmma); found sm_" +
                          std::to_string(d.sm_major) + std::to_string(d.sm_minor));
  }
  if (c.quant != QuantMode::kBF16 && c.quant != QuantMode::kFP16) {
    return Capability::no("quant mode " + std::string(quant_mode_name(c.quant)) +
                          " not implemented in grouped yet (bf16 and fp16 are)");
  }
  if (c.hidden_size % 8 != 0 || c.intermediate_size % 8 != 0) {
    return Capability::no(
        "hidden and intermediate sizes must be multiples of 8 (16-byte TMA rows)");
  }
  if (c.num_experts % m.ep_size != 0) {
    return Capability::no("ep_size " + std::to_string(m.ep_size) + " does not divide " +
                          std::to_string(c.num_experts) + " experts");
  }
  if (c.num_shared_experts > 0 && c.shared_intermediate_size % c.intermediate_size != 0) {
    return Capability::no("shared MLP of " + std::to_string(c.shared_intermediate_size) +
                          " is not a multiple of the expert size " +
                          std::to_string(c.intermediate_size) + " (shared experts run as groups)");
  }
  if (c.num_experts / m.ep_size + shared_groups(c) > kMaxGroups) {
    return Capability::no("more than " + std::to_string(kMaxGroups) + " expert groups per rank");
  }
  return Capability::yes("Hopper grouped GEMM (TMA + wgmma, warp-specialised, persistent)");
}

class GroupedBackend final : public MoEBackend {
 public:
  GroupedBackend(const MoeConfig& c, const Mapping& m, const DeviceInfo& d)
      : config_(c),
        num_local_(c.num_experts / m.ep_size),
        expert_begin_(m.ep_rank * num_local_),
        num_shared_(shared_groups(c)),
        num_sms_(d.num_sms),
        quant_(c, expert_begin_, num_local_, num_shared_) {
    // MOE_GROUPED_BLOCK_N forces the token tile (for tuning sweeps); read once, here.
    if (const char* env = std::getenv("MOE_GROUPED_BLOCK_N")) {
      forced_block_n_ = std::atoi(env);
      MOE_CHECK(grouped::is_supported_block_n(forced_block_n_), "MOE_GROUPED_BLOCK_N=", env,
                " is not a compiled token tile (8, 16, 32, 64, 128, 256; fewer with "
                "MOE_TRIM_KERNELS)");
    }
  }

  std::string_view name() const override { return "grouped"; }
  SchedulerKind scheduler_kind() const override { return SchedulerKind::kExternalComm; }
  bool supports_load_balancer() const override { return false; }
  Device device() const override { return Device::cuda(0); }

  void create_weights() override {
    quant_.create_weights();
    const int64_t max_t = config_.max_num_tokens, k = config_.top_k;
    const int64_t h = config_.hidden_size, inter = config_.intermediate_size;
    max_rows_ = max_t * (k + num_shared_);
    const Device dev = device();
    offsets_ = Tensor::empty({quant_.num_groups() + 1}, DType::kI32, dev);
    row_token_ = Tensor::empty({max_rows_}, DType::kI32, dev);
    row_weight_ = Tensor::empty({max_rows_}, DType::kF32, dev);
    pair_row_ = Tensor::empty({max_t * k}, DType::kI32, dev);
    x_perm_ = Tensor::empty({max_rows_, h}, config_.act_dtype, dev);     // [R, H]
    inter_ = Tensor::empty({max_rows_, inter}, config_.act_dtype, dev);  // [R, I]
    y_ = Tensor::empty({max_rows_, h}, config_.act_dtype, dev);          // [R, H]
    for (size_t i = 0; i < kAllBlockNs.size(); ++i) {
      if (!grouped::is_supported_block_n(kAllBlockNs[i])) continue;
      x_maps_[i] =
          grouped::make_rows_map(x_perm_.data(), config_.act_dtype, max_rows_, h, kAllBlockNs[i]);
      h_maps_[i] = grouped::make_rows_map(inter_.data(), config_.act_dtype, max_rows_, inter,
                                          kAllBlockNs[i]);
    }
  }
  void load_weights(WeightSource& source, LoadMode mode) override {
    quant_.load_weights(source, mode);
  }
  void post_load_weights() override {}
  void process_weights_after_loading() override { quant_.process_weights_after_loading(); }
  void pre_reload_weights() override { quant_.pre_reload_weights(); }

  size_t workspace_bytes(int max_tokens) const override {
    const size_t rows = static_cast<size_t>(max_tokens) * (config_.top_k + num_shared_);
    const size_t elem = dtype_bits(config_.act_dtype) / 8;
    return rows * (2 * config_.hidden_size + config_.intermediate_size) * elem + rows * 8 +
           static_cast<size_t>(max_tokens) * config_.top_k * 4;
  }

  QuantizedInput quantize_input(const TensorView& x, void*) override { return {x, {}}; }

  void run_moe(const RunMoeArgs& a, void* stream_ptr) override {
    MOE_CHECK(quant_.loaded(), "grouped: run_moe before weights were loaded");
    const TensorView& x = a.x.data;
    const int64_t t = x.size(0);
    MOE_CHECK(x.device().is_cuda() && a.out.device().is_cuda(),
              "grouped: x and out must be on the GPU, got ", x.str(), " and ", a.out.str());
    MOE_CHECK(a.out.dtype() == config_.act_dtype || a.out.dtype() == DType::kF32,
              "grouped: out must be ", dtype_name(config_.act_dtype),
              " or f32 (expert-parallel partial sums), got ", a.out.str());
    MOE_CHECK(t <= config_.max_num_tokens, "grouped: ", t, " tokens exceed max_num_tokens ",
              config_.max_num_tokens);
    if (t == 0) return;
    const bool shared = a.with_shared && num_shared_ > 0;
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    const int k = config_.top_k;

    grouped::PlanParams plan;
    plan.topk_ids = a.topk_ids.data_as<const int32_t>();
    plan.topk_weights = a.topk_weights.data_as<const float>();
    plan.num_tokens = static_cast<int>(t);
    plan.top_k = k;
    plan.expert_begin = expert_begin_;
    plan.num_local_experts = num_local_;
    plan.num_shared_groups = num_shared_;
    plan.with_routed = a.with_routed;
    plan.with_shared = shared;
    plan.expert_offsets = offsets_.data_as<int32_t>();
    plan.row_token = row_token_.data_as<int32_t>();
    plan.row_weight = row_weight_.data_as<float>();
    plan.pair_row = pair_row_.data_as<int32_t>();
    grouped::launch_plan(plan, stream);

    const int64_t rows_bound = t * ((a.with_routed ? k : 0) + (shared ? num_shared_ : 0));
    grouped::GatherParams gather;
    gather.x = x.data();
    gather.x_perm = x_perm_.data();
    gather.row_token = plan.row_token;
    gather.total_rows = plan.expert_offsets + quant_.num_groups();
    gather.max_rows = static_cast<int>(rows_bound);
    gather.hidden = config_.hidden_size;
    grouped::launch_gather(gather, config_.act_dtype, stream);

    const GemmConfig cfg = forced_block_n_ > 0
                               ? grouped::gemm_config_for_block_n(forced_block_n_)
                               : grouped::choose_gemm_config(rows_bound, quant_.num_groups());
    const size_t map_idx = map_index(cfg.block_n);

    grouped::GroupedGemmParams fc1;
    fc1.num_experts = quant_.num_groups();
    fc1.n = 2 * config_.intermediate_size;
    fc1.k = config_.hidden_size;
    fc1.expert_offsets = plan.expert_offsets;
    fc1.out = inter_.data();
    fc1.bias = quant_.b13();
    fc1.oai_alpha = config_.swiglu_oai.alpha;
    fc1.oai_limit = config_.swiglu_oai.limit;
    const auto fc1_epilogue = config_.activation == Activation::kSwiGLU
                                  ? grouped::Epilogue::kSwiGLU
                                  : grouped::Epilogue::kSwiGLUOAI;
    grouped::launch_grouped_gemm(fc1, quant_.w13_map(), x_maps_[map_idx], cfg, fc1_epilogue,
                                 quant_.dtype(), num_sms_, stream);

    grouped::GroupedGemmParams fc2;
    fc2.num_experts = quant_.num_groups();
    fc2.n = config_.hidden_size;
    fc2.k = config_.intermediate_size;
    fc2.expert_offsets = plan.expert_offsets;
    fc2.out = y_.data();
    fc2.row_weights = plan.row_weight;
    fc2.bias = quant_.b2();
    grouped::launch_grouped_gemm(fc2, quant_.w2_map(), h_maps_[map_idx], cfg,
                                 grouped::Epilogue::kRoutingWeight, quant_.dtype(), num_sms_,
                                 stream);

    grouped::FinalizeParams fin;
    fin.y = y_.data();
    fin.out = a.out.data();
    fin.pair_row = plan.pair_row;
    fin.expert_offsets = plan.expert_offsets;
    fin.num_tokens = static_cast<int>(t);
    fin.top_k = k;
    fin.hidden = config_.hidden_size;
    fin.num_local_experts = num_local_;
    fin.num_shared_groups = num_shared_;
    fin.with_routed = a.with_routed;
    fin.with_shared = shared;
    fin.accumulate = a.accumulate;
    grouped::launch_finalize(fin, config_.act_dtype, a.out.dtype(), stream);
  }

 private:
  static size_t map_index(int block_n) {
    for (size_t i = 0; i < kAllBlockNs.size(); ++i) {
      if (kAllBlockNs[i] == block_n) return i;
    }
    MOE_UNREACHABLE("block_n ", block_n);
  }

  MoeConfig config_;
  int num_local_, expert_begin_, num_shared_, num_sms_;
  int forced_block_n_ = 0;
  grouped::Grouped16BitQuantMethod quant_;
  int64_t max_rows_ = 0;
  Tensor offsets_, row_token_, row_weight_, pair_row_, x_perm_, inter_, y_;
  std::array<CUtensorMap, kAllBlockNs.size()> x_maps_{}, h_maps_{};
};

}  // namespace

const BackendEntry& grouped_backend_entry() {
  static const BackendEntry entry{
      "grouped", can_implement,
      [](const MoeConfig& c, const Mapping& m, const DeviceInfo& d) -> std::unique_ptr<MoEBackend> {
        return std::make_unique<GroupedBackend>(c, m, d);
      }};
  return entry;
}

}  // namespace moe
