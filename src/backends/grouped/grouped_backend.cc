#include "backends/grouped/grouped_backend.h"

#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "backends/grouped/grouped_fp8_quant_method.h"
#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/grouped_quant_method.h"
#include "backends/grouped/moe_kernels.h"
#include "backends/grouped/tma_map.h"
#include "moe/errors.h"
#include "quant/fp8_quant_kernels.h"

namespace moe {
namespace {

using grouped::GemmConfig;
using grouped::Scaling;

constexpr int kMaxGroups = 1024;  // plan kernel limit

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// A 0 / 1 developer switch from the environment (A/B runs): `value` is left as it is when the
/// variable is unset.
void read_switch(const char* name, bool& value) {
  if (const char* env = std::getenv(name)) {
    MOE_CHECK(std::string_view(env) == "0" || std::string_view(env) == "1", name, "=", env,
              " is not 0 or 1");
    value = env[0] == '1';
  }
}
constexpr std::array<int, 7> kAllBlockNs = {8, 16, 32, 64, 128, 192, 256};

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
  const bool fp8 = c.quant == QuantMode::kFP8PerTensor || c.quant == QuantMode::kFP8Block;
  if (c.quant != QuantMode::kBF16 && c.quant != QuantMode::kFP16 && !fp8) {
    return Capability::no("quant mode " + std::string(quant_mode_name(c.quant)) +
                          " not implemented in grouped (bf16, fp16, fp8_per_tensor and "
                          "fp8_block are)");
  }
  if (fp8 && c.act_dtype != DType::kBF16) {
    return Capability::no("fp8 weights with " + std::string(dtype_name(c.act_dtype)) +
                          " activations are not compiled in grouped (bf16 activations are)");
  }
  const int row_align = fp8 ? 16 : 8;
  if (c.hidden_size % row_align != 0 || c.intermediate_size % row_align != 0) {
    return Capability::no("hidden and intermediate sizes must be multiples of " +
                          std::to_string(row_align) + " (16-byte TMA rows)");
  }
  if (c.quant == QuantMode::kFP8Block) {
    const std::string why =
        grouped::GroupedFp8QuantMethod::fp8_block_unsupported_reason(c, shared_groups(c));
    if (!why.empty()) return Capability::no(why);
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
  return Capability::yes(fp8 ? "Hopper grouped GEMM, e4m3 (TMA + FP8 wgmma, " +
                                   std::string(c.quant == QuantMode::kFP8Block
                                                   ? "128-block scales promoted in fp32"
                                                   : "per-tensor scales") +
                                   ", persistent)"
                             : "Hopper grouped GEMM (TMA + wgmma, warp-specialised, persistent)");
}

class GroupedBackend final : public MoEBackend {
 public:
  GroupedBackend(const MoeConfig& c, const Mapping& m, const DeviceInfo& d)
      : config_(c),
        num_local_(c.num_experts / m.ep_size),
        expert_begin_(m.ep_rank * num_local_),
        num_shared_(shared_groups(c)),
        num_sms_(d.num_sms),
        scaling_(c.quant == QuantMode::kFP8Block       ? Scaling::kBlock
                 : c.quant == QuantMode::kFP8PerTensor ? Scaling::kPerTensor
                                                       : Scaling::kNone) {
    if (scaling_ == Scaling::kNone) {
      q16_.emplace(c, expert_begin_, num_local_, num_shared_);
    } else {
      q8_.emplace(c, expert_begin_, num_local_, num_shared_);
    }
    // MOE_GROUPED_SCATTER_PAIR_FROM: the token count from which quantize_scatter takes two
    // tokens a block (default 512; 1: always, as scripts/device/grouped_check.sh tests it).
    if (const char* env = std::getenv("MOE_GROUPED_SCATTER_PAIR_FROM")) {
      scatter_pair_from_ = std::atoi(env);
    }
    // MOE_GROUPED_SCATTER_ROWS=0: quantize_scatter's pairs of tokens in blocks of four groups
    // (A/B runs; default 1: blocks of whole rows, QuantizeScatterParams::whole_rows).
    read_switch("MOE_GROUPED_SCATTER_ROWS", scatter_rows_);
    // MOE_GROUPED_FC1_SMS: FC1's grid forced (A/B runs; 0: the backend's choice).
    if (const char* env = std::getenv("MOE_GROUPED_FC1_SMS")) fc1_sms_ = std::atoi(env);
    // MOE_GROUPED_QUANT_ON_N=0: the tokens-on-N FC1 writes bf16 and the 1x128 kernel quantizes
    // it (A/B runs; default 1: grouped::quantize_on_n decides).
    read_switch("MOE_GROUPED_QUANT_ON_N", quant_on_n_);
    // MOE_GROUPED_UNIT_OUT=0: FC2 on the 128-token tokens-on-M tile stores y from its
    // consumer warps, row-major (A/B runs; default 1: its unit output staged for a store warp,
    // y blocked -- grouped::y_block_offset).
    read_switch("MOE_GROUPED_UNIT_OUT", unit_out_);
    // MOE_GROUPED_PER_TENSOR_ON_M=0: fp8_per_tensor keeps its tokens-on-N tiles at prefill
    // (A/B runs; default 1: the tokens-on-M tiles without promotion, tensor_on_m in run_moe).
    read_switch("MOE_GROUPED_PER_TENSOR_ON_M", per_tensor_on_m_);
    // MOE_GROUPED_PER_TENSOR_SCATTER=0: fp8_per_tensor takes quantize_input's e4m3 rows (its
    // kernel, then the gather) instead of quantizing in run_moe (A/B runs; default 1).
    read_switch("MOE_GROUPED_PER_TENSOR_SCATTER", per_tensor_scatter_);
    // MOE_GROUPED_BLOCK_SCATTER=0: fp8_block takes quantize_input's e4m3 rows and 1x128 scales
    // (its kernel, then the gather: the path of expert parallelism's post-quant dispatch) instead
    // of quantizing in run_moe (A/B runs on one GPU; default 1).
    read_switch("MOE_GROUPED_BLOCK_SCATTER", block_scatter_);
    // MOE_GROUPED_GATHER_TRANSPOSE=0: the gather stores e4m3 rows' 1x128 scales by row itself at
    // every size (A/B runs; default 1: by a transposition from grouped::gather_scales_by_token).
    read_switch("MOE_GROUPED_GATHER_TRANSPOSE", gather_transpose_);
    // MOE_GROUPED_BLOCK_N forces the token tile (for tuning sweeps); read once, here. A tile
    // compiled only for another mode (192: fp8_block; 256: the others) leaves this mode's
    // heuristic in charge, so that one setting sweeps a test binary that runs every mode.
    if (const char* env = std::getenv("MOE_GROUPED_BLOCK_N")) {
      const int b = std::atoi(env);
      const bool here = grouped::is_supported_block_n(b, scaling_);
      MOE_CHECK(here || grouped::is_supported_block_n(b, Scaling::kNone) ||
                    grouped::is_supported_block_n(b, Scaling::kBlock),
                "MOE_GROUPED_BLOCK_N=", env,
                " is not a compiled token tile (8, 16, 32, 64, 128, 256; fp8_block: 8, 16, 32, "
                "64, 128, 192; fewer with MOE_TRIM_KERNELS)");
      if (here) {
        forced_block_n_ = b;
      } else {
        std::fprintf(stderr,
                     "moe: MOE_GROUPED_BLOCK_N=%d is not a tile of %s: the grouped backend "
                     "chooses this layer's tiles itself\n",
                     b, std::string(quant_mode_name(c.quant)).c_str());
      }
    }
  }

  std::string_view name() const override { return "grouped"; }
  SchedulerKind scheduler_kind() const override { return SchedulerKind::kExternalComm; }
  bool supports_load_balancer() const override { return true; }
  Device device() const override { return Device::cuda(0); }

  void register_eplb_tensors(ExpertTensorRegistry& registry) override {
    if (q16_) q16_->register_eplb_tensors(registry);
    if (q8_) q8_->register_eplb_tensors(registry);
  }

  void create_weights() override {
    if (q16_) q16_->create_weights();
    if (q8_) q8_->create_weights();
    const int64_t max_t = config_.max_num_tokens, k = config_.top_k;
    const int64_t h = config_.hidden_size, inter = config_.intermediate_size;
    max_rows_ = max_t * (k + num_shared_);
    const Device dev = device();
    const bool fp8 = scaling_ != Scaling::kNone;
    const DType op = fp8 ? DType::kE4M3 : config_.act_dtype;  // GEMM operand type
    offsets_ = Tensor::empty({num_groups() + 1}, DType::kI32, dev);
    row_token_ = Tensor::empty({max_rows_}, DType::kI32, dev);
    row_weight_ = Tensor::empty({max_rows_}, DType::kF32, dev);
    pair_row_ = Tensor::empty({max_t * k}, DType::kI32, dev);
    plan_scratch_ = Tensor::empty({grouped::kPlanScratchInts}, DType::kI32, dev);
    x_perm_ = Tensor::empty({max_rows_, h}, op, dev);  // [R, H]
    // FC1's output: per-tensor e4m3 straight from the epilogue; else the activation type.
    inter_ = Tensor::empty({max_rows_, inter},
                           scaling_ == Scaling::kPerTensor ? DType::kE4M3 : config_.act_dtype,
                           dev);  // [R, I]
    // [R, H], or (fp8_block, unit_out_) [ceil(H / 256)][R][256] (grouped::y_block_offset)
    y_ = Tensor::empty({max_rows_, (h + 255) / 256 * 256}, config_.act_dtype, dev);
    if (fp8) xq_in_ = Tensor::empty({max_t, h}, DType::kE4M3, dev);  // quantize_input's
    const int64_t ld = quant::fp8_scale_ld(max_rows_);
    if (scaling_ == Scaling::kBlock) {
      const int64_t kb1 = ceil_div(h, 128), kb2 = ceil_div(inter, 128);
      xs_in_ = Tensor::empty({max_t, kb1}, DType::kF32, dev);           // [T, H/128]
      xs_tok_ = Tensor::empty({max_t, kb1}, DType::kF32, dev);          // quantize_scatter's
      xs_t_ = Tensor::empty({kb1, ld}, DType::kF32, dev);               // [H/128, R]
      inter_q_ = Tensor::empty({max_rows_, inter}, DType::kE4M3, dev);  // [R, I]
      hs_t_ = Tensor::empty({kb2, ld}, DType::kF32, dev);               // [I/128, R]
    }
    const Tensor& fc2_in = scaling_ == Scaling::kBlock ? inter_q_ : inter_;
    for (size_t i = 0; i < kAllBlockNs.size(); ++i) {
      const int b = kAllBlockNs[i];
      // fp8_per_tensor's prefill runs the tokens-on-M tiles too (tensor_on_m in run_moe).
      const bool on_m = scaling_ == Scaling::kPerTensor && per_tensor_on_m_ &&
                        grouped::is_tokens_on_m_block_n(b) &&
                        grouped::is_supported_block_n(b, Scaling::kBlock);
      if (!grouped::is_supported_block_n(b, scaling_) && !on_m) continue;
      x_maps_[i] = grouped::make_rows_map(x_perm_.data(), op, max_rows_, h, b);
      h_maps_[i] = grouped::make_rows_map(fc2_in.data(), op, max_rows_, inter, b);
      if (scaling_ == Scaling::kBlock && grouped::is_supported_block_n(b, Scaling::kBlock)) {
        xs_maps_[i] = grouped::make_scales_map(xs_t_.data_as<float>(), xs_t_.size(0), ld,
                                               grouped::scale_box_rows(kAllBlockNs[i]));
        hs_maps_[i] = grouped::make_scales_map(hs_t_.data_as<float>(), hs_t_.size(0), ld,
                                               grouped::scale_box_rows(kAllBlockNs[i]));
      }
    }
  }
  void load_weights(WeightSource& source, LoadMode mode) override {
    if (q16_) q16_->load_weights(source, mode);
    if (q8_) q8_->load_weights(source, mode);
  }
  void post_load_weights() override {}
  void process_weights_after_loading() override {
    if (q16_) q16_->process_weights_after_loading();
    if (q8_) q8_->process_weights_after_loading();
  }
  void pre_reload_weights() override {
    if (q16_) q16_->pre_reload_weights();
    if (q8_) q8_->pre_reload_weights();
  }

  size_t workspace_bytes(int max_tokens) const override {
    const size_t rows = static_cast<size_t>(max_tokens) * (config_.top_k + num_shared_);
    const size_t elem = dtype_bits(config_.act_dtype) / 8;
    const size_t h = config_.hidden_size, inter = config_.intermediate_size;
    size_t bytes = rows * 8 + static_cast<size_t>(max_tokens) * config_.top_k * 4;
    if (scaling_ == Scaling::kNone) return bytes + rows * (2 * h + inter) * elem;
    bytes += rows * (h + h * elem + inter) + static_cast<size_t>(max_tokens) * h;
    if (scaling_ == Scaling::kBlock) {
      bytes += rows * inter * elem + (rows + 4) * (h + inter) / 128 * 4 * 2 +
               static_cast<size_t>(max_tokens) * (h / 128 + 1) * 4 * 2;
    }
    return bytes;
  }

  QuantizedInput quantize_input(const TensorView& x, void* stream_ptr) override {
    if (scaling_ == Scaling::kNone) return {x, {}};
    MOE_CHECK(q8_->loaded(), "grouped: quantize_input before the weights were loaded");
    MOE_CHECK(x.ndim() == 2 && x.size(1) == config_.hidden_size && x.dtype() == config_.act_dtype &&
                  x.device().is_cuda() && x.is_contiguous(),
              "grouped quantize_input: x must be a contiguous ", dtype_name(config_.act_dtype),
              " [T, ", config_.hidden_size, "] on the GPU, got ", x.str());
    const int64_t t = x.size(0), h = config_.hidden_size;
    MOE_CHECK(t <= config_.max_num_tokens, "grouped quantize_input: ", t,
              " tokens exceed max_num_tokens ", config_.max_num_tokens);
    const TensorView q = xq_in_.view().slice_rows(0, t);
    if (scaling_ == Scaling::kPerTensor) {
      quant::Fp8QuantizePerTensorParams p;
      p.x = x.data();
      p.x_dtype = x.dtype();
      p.rows = t;
      p.cols = h;
      p.x_ld = h;
      p.scale = q8_->input_scale();
      p.q = q.data_as<uint8_t>();
      p.q_ld = h;
      quant::launch_fp8_quantize_per_tensor(p, stream_ptr);
      const TensorView scale(const_cast<float*>(q8_->input_scale()), DType::kF32, {1}, device());
      return {q, scale};
    }
    const TensorView scales = xs_in_.view().slice_rows(0, t);
    quant::Fp8Quantize1x128Params p;
    p.x = x.data();
    p.x_dtype = x.dtype();
    p.rows = t;
    p.cols = h;
    p.x_ld = h;
    p.q = q.data_as<uint8_t>();
    p.q_ld = h;
    p.scales = scales.data_as<float>();
    quant::launch_fp8_quantize_1x128(p, stream_ptr);
    return {q, scales};
  }

  /// e4m3 modes: run_moe takes act_dtype rows too and quantizes them with its gather
  /// (quantize_scatter: one pass over x where quantize_input's kernel and the gather took two).
  bool quantizes_in_run_moe() const override {
    return (scaling_ == Scaling::kBlock && block_scatter_) ||
           (scaling_ == Scaling::kPerTensor && per_tensor_scatter_);
  }

  void run_moe(const RunMoeArgs& a, void* stream_ptr) override {
    MOE_CHECK(loaded(), "grouped: run_moe before weights were loaded");
    const TensorView& x = a.x.data;
    const int64_t t = x.size(0);
    MOE_CHECK(x.device().is_cuda() && a.out.device().is_cuda(),
              "grouped: x and out must be on the GPU, got ", x.str(), " and ", a.out.str());
    MOE_CHECK(a.out.dtype() == config_.act_dtype || a.out.dtype() == DType::kF32,
              "grouped: out must be ", dtype_name(config_.act_dtype),
              " or f32 (expert-parallel partial sums), got ", a.out.str());
    MOE_CHECK(t <= config_.max_num_tokens, "grouped: ", t, " tokens exceed max_num_tokens ",
              config_.max_num_tokens);
    check_input(a.x);
    if (t == 0) return;
    const bool shared = a.with_shared && num_shared_ > 0;
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    const int k = config_.top_k;
    const int groups = num_groups();

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
    plan.block_counts = plan_scratch_.data_as<int32_t>();
    grouped::launch_plan(plan, stream);

    const int64_t rows_bound = t * ((a.with_routed ? k : 0) + (shared ? num_shared_ : 0));
    const int32_t* total_rows = plan.expert_offsets + groups;
    const int64_t ld = quant::fp8_scale_ld(max_rows_);
    // fp8_per_tensor at prefill: where fp8_block would take a tokens-on-M tile, so does
    // per-tensor (its own tokens-on-N tiles measured 1.2-1.34x the block-scaled ones there:
    // bench/NOTES.md, twenty-fourth session), without promotion: alpha at the unit's end, FC1
    // writing the intermediate in e4m3 at the static scale s_d itself (kStaticOut). (Through the
    // block-scaled kernels with the per-tensor scales in their layouts, promoting every K block,
    // it measured 2-17% slower: twenty-fifth session.)
    const GemmConfig tensor_on_m =
        scaling_ == Scaling::kPerTensor && per_tensor_on_m_ && forced_block_n_ == 0
            ? grouped::choose_gemm_config(rows_bound, groups, Scaling::kBlock)
            : GemmConfig{};
    const GemmConfig cfg =
        tensor_on_m.tokens_on_m
            ? tensor_on_m
            : grouped::with_tokens_on_m_setting(
                  forced_block_n_ > 0 ? grouped::gemm_config_for_block_n(forced_block_n_)
                                      : grouped::choose_gemm_config(rows_bound, groups, scaling_),
                  scaling_);
    // Decode: FC1 derives its offsets from the router's pairs (few: the one-block plan's
    // range), so the kernel before it triggers it at its start and FC1's weight stream begins
    // under the plan instead of after it (tokens-on-N tiles; the tokens-on-M ones read the
    // plan's offsets).
    const int64_t pairs = a.with_routed ? t * k : 0;
    // (Every shared group on or none: FC1 gives each shared group all T rows.)
    const bool fc1_from_pairs = !cfg.tokens_on_m && a.with_routed && shared == (num_shared_ > 0) &&
                                pairs <= grouped::kPlanOneBlockPairs && k <= 255 &&
                                expert_begin_ <= INT16_MAX && num_shared_ <= 255;
    if (scaling_ != Scaling::kNone && x.dtype() == config_.act_dtype) {
      // act_dtype rows (quantizes_in_run_moe): quantized once per token and scattered to its
      // rows in the same pass, instead of quantize_input's kernel and then the gather
      // (per-tensor: at the static input scale, no scales).
      grouped::QuantizeScatterParams qs;
      qs.x = x.data();
      qs.num_tokens = static_cast<int>(t);
      qs.hidden = config_.hidden_size;
      qs.top_k = k;
      qs.pair_row = plan.pair_row;
      qs.expert_offsets = plan.expert_offsets;
      qs.num_local_experts = num_local_;
      qs.num_shared_groups = num_shared_;
      qs.with_shared = shared;
      qs.x_perm = x_perm_.data_as<uint8_t>();
      if (scaling_ == Scaling::kBlock) {
        qs.scales_t = xs_t_.data_as<float>();
        qs.scales_ld = ld;
        // Many rows: the scales token-major, then transposed by row (grouped::scales_by_token).
        if (grouped::scales_by_token(rows_bound, config_.hidden_size)) {
          qs.scales_tok = xs_tok_.data_as<float>();
          qs.row_token = plan.row_token;
          qs.max_rows = static_cast<int>(rows_bound);
        }
      } else {
        qs.static_scale = q8_->input_scale();
      }
      qs.dependents_at_start = fc1_from_pairs;
      qs.scatter_pair_from = scatter_pair_from_;
      qs.whole_rows = scatter_rows_;
      grouped::launch_quantize_scatter(qs, x.dtype(), stream);
    } else {
      grouped::GatherParams gather;
      gather.x = x.data();
      gather.x_perm = x_perm_.data();
      gather.row_token = plan.row_token;
      gather.total_rows = total_rows;
      gather.max_rows = static_cast<int>(rows_bound);
      gather.hidden = config_.hidden_size;
      if (scaling_ == Scaling::kBlock) {
        gather.scales = a.x.scales.data_as<const float>();
        gather.scales_t = xs_t_.data_as<float>();
        gather.scale_groups = static_cast<int>(xs_t_.size(0));
        gather.scales_ld = ld;
        // Many rows: the scales by a transposition after the rows (gather_scales_by_token).
        gather.transpose_scales =
            gather_transpose_ && grouped::gather_scales_by_token(rows_bound, config_.hidden_size);
      }
      gather.dependents_at_start = fc1_from_pairs;
      grouped::launch_gather(gather, x.dtype(), stream);
    }

    const size_t m = map_index(cfg.block_n);
    const bool block = scaling_ == Scaling::kBlock;
    const bool fp8 = scaling_ != Scaling::kNone;

    // FC1's weight tiles (gate / up interleaved: 64 intermediate features each), and their pairs
    // (one 1x128 group of the intermediate each).
    const int fc1_m_tiles =
        (2 * config_.intermediate_size + grouped::kBlockM - 1) / grouped::kBlockM;
    const int fc1_m_pairs = (fc1_m_tiles + 1) / 2;
    // At most how many units the tokens-on-N FC1 gets of `m_tiles` weight tiles (or pairs).
    auto fc1_units_bound = [&](int m_tiles) {
      return grouped::decode_units_bound(pairs, num_local_, shared ? num_shared_ : 0, t,
                                         cfg.block_n, m_tiles);
    };
    // Block scaling: FC1 writes the intermediate in e4m3 with its 1x128 scales itself (no bf16
    // round trip, no separate quantization kernel) on the tokens-on-M tile, and on the
    // tokens-on-N tile where its two-tile units fill the GPU (grouped::quantize_on_n;
    // MOE_GROUPED_QUANT_ON_N=0 keeps the 1x128 kernel there, for A/B runs).
    const bool quant_on_n =
        block && !cfg.tokens_on_m && quant_on_n_ &&
        grouped::quantize_on_n(cfg.block_n, fc1_units_bound(fc1_m_pairs), num_sms_);
    const bool fused_quant = block && (cfg.tokens_on_m || quant_on_n);
    grouped::GroupedGemmParams fc1;
    fc1.num_experts = groups;
    fc1.n = 2 * config_.intermediate_size;
    fc1.k = config_.hidden_size;
    fc1.expert_offsets = plan.expert_offsets;
    // The plan is two kernels back (the gather or quantize_scatter in between waits first).
    fc1.offsets_before_wait = true;
    if (fc1_from_pairs) {
      fc1.offsets_from_pairs = true;
      fc1.expert_offsets = a.topk_ids.data_as<const int32_t>();
      fc1.top_k = static_cast<uint8_t>(k);
      fc1.shared_groups = static_cast<uint8_t>(num_shared_);
      fc1.num_tokens = static_cast<int16_t>(t);  // t * k <= kPlanOneBlockPairs
      fc1.expert_begin = static_cast<int16_t>(expert_begin_);
    }
    fc1.out = fused_quant ? inter_q_.data() : inter_.data();
    if (fused_quant) {
      fc1.out_scales = hs_t_.data_as<float>();
      fc1.out_scales_ld = ld;
    }
    fc1.bias = fp8 ? q8_->b13() : q16_->b13();
    fc1.oai_alpha = config_.swiglu_oai.alpha;
    fc1.oai_limit = config_.swiglu_oai.limit;
    if (fp8) {
      fc1.w_scales = q8_->w13_scales();
      fc1.act_scale = q8_->input_scale();
      fc1.out_scale = q8_->intermediate_scale();
    }
    const auto fc1_epilogue = config_.activation == Activation::kSwiGLU
                                  ? grouped::Epilogue::kSwiGLU
                                  : grouped::Epilogue::kSwiGLUOAI;
    // Decode tiles, few rounds: FC1's units spread evenly over the fewest CTAs that take them in
    // as many rounds (balanced_grid), not a last round of a few CTAs streaming at their SMs'
    // intake. MOE_GROUPED_FC1_SMS=N forces N CTAs (A/B runs).
    int fc1_grid = num_sms_;
    if (fc1_sms_ > 0) {
      fc1_grid = fc1_sms_;
    } else if (!cfg.tokens_on_m) {
      fc1_grid =
          grouped::balanced_grid(fc1_units_bound(quant_on_n ? fc1_m_pairs : fc1_m_tiles), num_sms_);
    }
    const grouped::GemmTypes fc1_types{
        fp8 ? DType::kE4M3 : config_.act_dtype,
        scaling_ == Scaling::kPerTensor || fused_quant ? DType::kE4M3 : config_.act_dtype,
        scaling_};
    grouped::launch_grouped_gemm(fc1, fp8 ? q8_->w13_map() : q16_->w13_map(), x_maps_[m],
                                 block ? &xs_maps_[m] : nullptr, cfg, fc1_epilogue, fc1_types,
                                 fc1_grid, stream);

    if (block && !fused_quant) {
      // The intermediate's 1x128 quantization (a 128-wide group spans two FC1 tiles).
      quant::Fp8Quantize1x128Params q;
      q.x = inter_.data();
      q.x_dtype = config_.act_dtype;
      q.rows = rows_bound;
      q.cols = config_.intermediate_size;
      q.x_ld = q.cols;
      q.q = inter_q_.data_as<uint8_t>();
      q.q_ld = q.cols;
      q.scales_gemm = hs_t_.data_as<float>();
      q.scales_gemm_ld = ld;
      q.pad_scales_gemm = false;
      q.rows_limit = total_rows;
      // FC2 launches at once: its CTAs that find an SM free beside FC1 (decode: FC1 has fewer
      // units than SMs) start streaming their first stages' weights under FC1.
      q.dependents_at_start = true;
      quant::launch_fp8_quantize_1x128(q, stream);
    }

    grouped::GroupedGemmParams fc2;
    fc2.num_experts = groups;
    fc2.n = config_.hidden_size;
    fc2.k = config_.intermediate_size;
    fc2.expert_offsets = plan.expert_offsets;
    // FC1 (or the 1x128 quantization after it) in between, both waiting first.
    fc2.offsets_before_wait = true;
    fc2.out = y_.data();
    // The 128-token tokens-on-M FC2 stages its units whole and writes y blocked.
    const int64_t y_block_rows = unit_out_ && cfg.tokens_on_m && cfg.block_n == 128 ? max_rows_ : 0;
    fc2.out_scales_ld = y_block_rows;
    fc2.row_weights = plan.row_weight;
    fc2.bias = fp8 ? q8_->b2() : q16_->b2();
    if (fp8) {
      fc2.w_scales = q8_->w2_scales();
      fc2.act_scale = q8_->intermediate_scale();
    }
    const grouped::GemmTypes fc2_types{fp8 ? DType::kE4M3 : config_.act_dtype, config_.act_dtype,
                                       scaling_};
    grouped::launch_grouped_gemm(fc2, fp8 ? q8_->w2_map() : q16_->w2_map(), h_maps_[m],
                                 block ? &hs_maps_[m] : nullptr, cfg,
                                 grouped::Epilogue::kRoutingWeight, fc2_types, num_sms_, stream);

    grouped::FinalizeParams fin;
    fin.y = y_.data();
    fin.y_block_rows = y_block_rows;
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

  int num_groups() const { return num_local_ + num_shared_; }
  bool loaded() const { return q16_ ? q16_->loaded() : q8_->loaded(); }

  /// The input run_moe takes: act_dtype rows (16-bit; the e4m3 modes too, quantizes_in_run_moe),
  /// or quantize_input's e4m3 rows with their scales (per-tensor [1], 1x128 [T, H/128]), e.g.
  /// after a post-quant dispatch.
  void check_input(const QuantizedInput& in) const {
    const TensorView& x = in.data;
    const int64_t h = config_.hidden_size;
    if (scaling_ != Scaling::kNone && x.dtype() == config_.act_dtype) {
      MOE_CHECK(x.ndim() == 2 && x.size(1) == h && x.is_contiguous() && in.scales.empty(),
                "grouped ", quant_mode_name(config_.quant), ": unquantized x must be contiguous ",
                dtype_name(x.dtype()), " [T, ", h, "] without scales, got ", x.str());
      return;
    }
    const DType want = scaling_ == Scaling::kNone ? config_.act_dtype : DType::kE4M3;
    MOE_CHECK(x.ndim() == 2 && x.size(1) == h && x.dtype() == want && x.is_contiguous(),
              "grouped: x must be a contiguous ", dtype_name(want), " [T, ", h, "]",
              scaling_ == Scaling::kNone ? "" : " (from quantize_input)", ", got ", x.str());
    if (scaling_ == Scaling::kNone) return;
    const TensorView& s = in.scales;
    const bool block = scaling_ == Scaling::kBlock;
    const int64_t groups = ceil_div(h, 128);
    MOE_CHECK(s.dtype() == DType::kF32 && s.device().is_cuda() && s.is_contiguous() &&
                  (block ? (s.ndim() == 2 && s.size(0) == x.size(0) && s.size(1) == groups)
                         : (s.numel() == 1)),
              "grouped ", quant_mode_name(config_.quant), ": x's scales must be f32 ",
              block ? "[T, " + std::to_string(groups) + "]" : std::string("[1]"),
              " on the GPU, got ", s.str());
  }

  MoeConfig config_;
  int num_local_, expert_begin_, num_shared_, num_sms_;
  Scaling scaling_;
  int forced_block_n_ = 0;
  int scatter_pair_from_ = 512;     // QuantizeScatterParams::scatter_pair_from
  int fc1_sms_ = 0;                 // MOE_GROUPED_FC1_SMS
  bool unit_out_ = true;            // MOE_GROUPED_UNIT_OUT
  bool quant_on_n_ = true;          // MOE_GROUPED_QUANT_ON_N
  bool scatter_rows_ = true;        // MOE_GROUPED_SCATTER_ROWS
  bool per_tensor_on_m_ = true;     // MOE_GROUPED_PER_TENSOR_ON_M
  bool per_tensor_scatter_ = true;  // MOE_GROUPED_PER_TENSOR_SCATTER
  bool block_scatter_ = true;       // MOE_GROUPED_BLOCK_SCATTER
  bool gather_transpose_ = true;    // MOE_GROUPED_GATHER_TRANSPOSE
  std::optional<grouped::Grouped16BitQuantMethod> q16_;
  std::optional<grouped::GroupedFp8QuantMethod> q8_;
  int64_t max_rows_ = 0;
  Tensor offsets_, row_token_, row_weight_, pair_row_, plan_scratch_, x_perm_, inter_, y_;
  Tensor xq_in_, xs_in_, xs_tok_, xs_t_, inter_q_, hs_t_;  // fp8 modes
  std::array<CUtensorMap, kAllBlockNs.size()> x_maps_{}, h_maps_{}, xs_maps_{}, hs_maps_{};
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
