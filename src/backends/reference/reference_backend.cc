// The reference backend (contract in reference_backend.h).
//
// run_moe works on chunks of at most kTokensPerChunk tokens, in four steps:
//   1. group the chunk's (token, k) pairs by local expert (the shared MLP is one more
//      "expert" that every token visits) and dequantize the input rows X [n, H] to double;
//   2. FC1, parallel over (expert, block of kRowBlock rows of W1/W3): each weight row is
//      dequantized once and dotted with every token of that expert -> G, U [pairs, I];
//      then, parallel over pairs, the activation and the intermediate's quantization
//      emulation -> Hq [pairs, I];
//   3. FC2 the same way over (expert, block of rows of W2) -> Y [pairs, H] (+ b_down);
//   4. per token: the sum over k in k order of w * y, then the shared term, then out
//      when accumulating, rounded once to act_dtype -- or not rounded at all when out is a
//      wide partial-sum buffer (f64 or f32).
// NOTE: the work items of steps 2-3 are handed out dynamically, but each output element is
// computed by exactly one dot product with a fixed order, so the bits never depend on it.
#include "backends/reference/reference_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "core/thread_pool.h"
#include "eplb/expert_tensors.h"
#include "moe/errors.h"
#include "quant/formats.h"

namespace moe {
namespace {

inline constexpr int64_t kTokensPerChunk = 256;  // bounds the float64 buffers of a chunk
inline constexpr int64_t kRowBlock = 32;         // weight rows per work item

/// a . b over n doubles, with 8 independent accumulators (vectorisable without
/// -ffast-math) combined in a fixed order.
inline double dot(const double* a, const double* b, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  double tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

/// Calls fn(i, scratch) for every i in [0, n), items handed out dynamically to the pool's
/// threads; `scratch` is a per-thread buffer of scratch_size doubles.
template <class Fn>
void parallel_items(int64_t n, int64_t scratch_size, const Fn& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(n, cpu_num_threads());
  parallel_for(workers, 1, [&](int64_t, int64_t) {
    std::vector<double> scratch(scratch_size);
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, scratch.data());
  });
}

double act_to_double(uint16_t bits, DType dtype) {
  return dtype == DType::kBF16 ? fmt::bf16_to_float(bits) : fmt::f16_to_float(bits);
}

uint16_t double_to_act(double x, DType dtype) {
  const float f = static_cast<float>(x);
  return dtype == DType::kBF16 ? fmt::float_to_bf16(f) : fmt::float_to_f16(f);
}

/// One expert's share of a chunk: the weights and the tokens (chunk-local indices) it runs.
struct ExpertTask {
  const RefExpertWeights* weights = nullptr;
  std::vector<int64_t> tokens;  // [n_e] chunk-local token index per pair
  int64_t first_pair = 0;       // row of the first pair in Y [pairs, H]
  int64_t inter_offset = 0;     // offset of its G/U/Hq block [n_e, I] in doubles
  int64_t inter = 0;            // I of this expert
};

/// A block of weight rows of one task: the unit of parallel work in FC1 and FC2.
struct RowBlock {
  int task;
  int64_t row_begin;
  int64_t row_end;
};

/// Blocks of kRowBlock rows of W1/W3 (fc1) or W2 of every task that has tokens.
std::vector<RowBlock> row_blocks(const std::vector<ExpertTask>& tasks, bool fc1, int64_t hidden) {
  std::vector<RowBlock> blocks;
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].tokens.empty()) continue;
    const int64_t rows = fc1 ? tasks[i].inter : hidden;
    for (int64_t r = 0; r < rows; r += kRowBlock) {
      blocks.push_back({static_cast<int>(i), r, std::min(rows, r + kRowBlock)});
    }
  }
  return blocks;
}

/// The work of one chunk: a task per local expert (in local order; those without tokens
/// stay empty), then the shared MLP's task when it runs.
struct ChunkPlan {
  std::vector<ExpertTask> tasks;
  std::vector<int64_t> pair_of;  // [n, k] -> row of the pair in Y, -1 when not local
  int64_t num_pairs = 0;
  int64_t inter_total = 0;         // doubles of G, U and Hq
  int64_t shared_first_pair = -1;  // row of token 0's shared output in Y
};

/// Groups the pairs of `ids` [n, k] (nullptr: no routed experts) by local expert, keeping
/// (token, k) order within an expert.
ChunkPlan plan_chunk(const int32_t* ids, int64_t n, int64_t top_k, int first_local,
                     const std::vector<RefExpertWeights>& experts, const RefExpertWeights* shared) {
  const int num_local = static_cast<int>(experts.size());
  ChunkPlan plan;
  plan.tasks.resize(num_local);
  for (int l = 0; l < num_local; ++l) plan.tasks[l].weights = &experts[l];
  plan.pair_of.assign(n * top_k, -1);
  // First the pair's index within its expert, then (below) its row in Y.
  for (int64_t i = 0; ids != nullptr && i < n * top_k; ++i) {
    const int local = ids[i] - first_local;
    if (local < 0 || local >= num_local) continue;
    plan.pair_of[i] = static_cast<int64_t>(plan.tasks[local].tokens.size());
    plan.tasks[local].tokens.push_back(i / top_k);
  }
  if (shared != nullptr) {
    ExpertTask task;
    task.weights = shared;
    for (int64_t t = 0; t < n; ++t) task.tokens.push_back(t);
    plan.tasks.push_back(std::move(task));
  }
  for (ExpertTask& task : plan.tasks) {
    task.first_pair = plan.num_pairs;
    task.inter_offset = plan.inter_total;
    task.inter = task.weights->gate.rows;
    plan.num_pairs += static_cast<int64_t>(task.tokens.size());
    plan.inter_total += static_cast<int64_t>(task.tokens.size()) * task.inter;
  }
  for (int64_t i = 0; ids != nullptr && i < n * top_k; ++i) {
    if (plan.pair_of[i] >= 0) plan.pair_of[i] += plan.tasks[ids[i] - first_local].first_pair;
  }
  if (shared != nullptr) plan.shared_first_pair = plan.tasks.back().first_pair;
  return plan;
}

/// The gated activation of one element: SwiGLU, or SwiGLU-OAI with its clamps.
inline double gated_activation(double g, double u, const MoeConfig& config) {
  if (config.activation == Activation::kSwiGLUOAI) {
    const double alpha = config.swiglu_oai.alpha;
    const double limit = config.swiglu_oai.limit;
    g = std::min(g, limit);
    u = std::clamp(u, -limit, limit);
    return (u + 1.0) * g / (1.0 + std::exp(-alpha * g));
  }
  return g / (1.0 + std::exp(-g)) * u;
}

}  // namespace

ReferenceBackend::ReferenceBackend(const MoeConfig& config, const Mapping& mapping)
    : config_(config), mapping_(mapping) {
  const Capability cap = can_implement(config, mapping, DeviceInfo::cpu_only());
  MOE_CHECK(cap.ok, "reference backend: ", cap.reason);
  num_local_experts_ = config.num_experts / mapping.ep_size;
  first_local_expert_ = mapping.ep_rank * num_local_experts_;
  method_ = make_reference_quant_method(config);
}

Capability ReferenceBackend::can_implement(const MoeConfig& config, const Mapping& mapping,
                                           const DeviceInfo&) {
  try {
    config.validate();
    mapping.validate();
  } catch (const Error& e) {
    return Capability::no(e.message());
  }
  if (config.num_experts % mapping.ep_size != 0) {
    return Capability::no("expert parallelism: ep_size " + std::to_string(mapping.ep_size) +
                          " does not divide num_experts " + std::to_string(config.num_experts) +
                          " (each rank owns a contiguous range of E / ep_size experts)");
  }
  return Capability::yes("CPU oracle: float64 accumulation, every quant mode");
}

// ---- Weight lifecycle ---------------------------------------------------------------------

void ReferenceBackend::create_weights() {
  const int64_t hidden = config_.hidden_size;
  auto make_expert = [&](int expert, int64_t inter, bool with_bias) {
    RefExpertWeights w;
    w.expert = expert;
    w.gate = method_->create(inter, hidden, with_bias);
    w.up = method_->create(inter, hidden, with_bias);
    w.down = method_->create(hidden, inter, with_bias);
    return w;
  };
  experts_.clear();
  for (int l = 0; l < num_local_experts_; ++l) {
    experts_.push_back(
        make_expert(first_local_expert_ + l, config_.intermediate_size, config_.has_expert_biases));
  }
  shared_.reset();
  if (config_.num_shared_experts > 0) {
    // NOTE: the shared MLP carries no biases (no model has both biases and shared experts).
    shared_ = make_expert(kSharedExpert, config_.shared_intermediate_size, false);
  }
  input_buffers_ = method_->create_input_buffers(config_.max_num_tokens, hidden);
  state_ = State::kCreated;
}

void ReferenceBackend::load_weights(WeightSource& source, LoadMode mode) {
  MOE_CHECK(state_ != State::kConstructed, "reference backend: load_weights before create_weights");
  state_ = State::kCreated;  // a failed load leaves the weights unusable
  auto load_expert = [&](RefExpertWeights& w) {
    if (mode == LoadMode::kFusedGateUpProj) {
      method_->load_fused_gate_up(source, w.expert, w.gate, w.up);
    } else {
      method_->load(source, w.expert, Proj::kGate, w.gate);
      method_->load(source, w.expert, Proj::kUp, w.up);
    }
    method_->load(source, w.expert, Proj::kDown, w.down);
  };
  for (RefExpertWeights& w : experts_) load_expert(w);
  if (shared_) load_expert(*shared_);
  state_ = State::kLoaded;
}

std::vector<const RefExpertWeights*> ReferenceBackend::experts_run() const {
  std::vector<const RefExpertWeights*> all;
  for (const RefExpertWeights& w : experts_) all.push_back(&w);
  if (shared_) all.push_back(&*shared_);
  return all;
}

void ReferenceBackend::finish_loading() {
  MOE_CHECK(state_ == State::kLoaded || state_ == State::kReady,
            "reference backend: post-load processing before load_weights");
  // post_load_weights and process_weights_after_loading both land here; the weights loaded
  // since the last load_weights are validated once.
  if (state_ == State::kReady) return;
  const std::vector<const RefExpertWeights*> all = experts_run();
  // Validate in parallel; report the first bad tensor in expert order.
  std::vector<std::string> errors(all.size());
  parallel_for(static_cast<int64_t>(all.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        method_->validate(all[i]->gate, all[i]->expert, Proj::kGate);
        method_->validate(all[i]->up, all[i]->expert, Proj::kUp);
        method_->validate(all[i]->down, all[i]->expert, Proj::kDown);
      } catch (const Error& e) {
        errors[i] = e.message();
      }
    }
  });
  for (const std::string& e : errors) {
    if (!e.empty()) {
      state_ = State::kCreated;
      MOE_THROW("reference backend: invalid weights: ", e);
    }
  }
  method_->set_activation_scales(all);
  state_ = State::kReady;
}

void ReferenceBackend::post_load_weights() { finish_loading(); }

void ReferenceBackend::process_weights_after_loading() { finish_loading(); }

void ReferenceBackend::pre_reload_weights() {
  if (state_ != State::kConstructed) state_ = State::kCreated;
}

void ReferenceBackend::register_eplb_tensors(ExpertTensorRegistry& registry) {
  if (config_.quant == QuantMode::kFP8PerTensor) {
    registry.set_support(EplbSupport::kNotSupported,
                         "fp8_per_tensor quantizes activations with the largest input_scale over "
                         "the rank's experts, which a migrated slot would change");
    return;
  }
  // Every part of every projection is its own tensor per slot (checkpoint format).
  for (int l = 0; l < static_cast<int>(experts_.size()); ++l) {
    const RefExpertWeights& w = experts_[l];
    for (const auto& [name, proj] : {std::pair<const char*, const RefProjWeights*>{"gate", &w.gate},
                                     {"up", &w.up},
                                     {"down", &w.down}}) {
      const std::string n = name;
      registry.add_slot(n + ".weight", l, proj->weight);
      registry.add_slot(n + ".scale", l, proj->scale);
      registry.add_slot(n + ".global_scale", l, proj->global_scale);
      registry.add_slot(n + ".input_scale", l, proj->input_scale);
      registry.add_slot(n + ".bias", l, proj->bias);
    }
  }
  registry.set_support(EplbSupport::kSupported);
}

// ---- Compute ------------------------------------------------------------------------------

size_t ReferenceBackend::workspace_bytes(int max_tokens) const {
  const int64_t tokens = std::min<int64_t>(std::max(max_tokens, 0), kTokensPerChunk);
  const int64_t inter = std::max(config_.intermediate_size, config_.shared_intermediate_size);
  const int64_t pairs = tokens * (config_.top_k + (shared_ ? 1 : 0));
  const int64_t doubles = tokens * config_.hidden_size + pairs * (3 * inter + config_.hidden_size);
  return static_cast<size_t>(doubles) * sizeof(double);
}

QuantizedInput ReferenceBackend::quantize_input(const TensorView& x, void*) {
  MOE_CHECK(state_ == State::kReady,
            "reference backend: quantize_input before the weights are loaded and processed "
            "(create_weights, load_weights, post_load_weights)");
  return method_->quantize_input(x, input_buffers_);
}

void ReferenceBackend::run_moe(const RunMoeArgs& args, void*) {
  MOE_CHECK(state_ == State::kReady,
            "reference backend: run_moe before the weights are loaded and processed "
            "(create_weights, load_weights, post_load_weights)");
  const int64_t hidden = config_.hidden_size;
  const int64_t top_k = config_.top_k;
  method_->check_input(args.x, hidden);
  MOE_CHECK(args.x.data.device().is_cpu() && args.x.data.is_contiguous(),
            "run_moe: x must be a contiguous host tensor, got ", args.x.data.str());
  const int64_t tokens = args.x.data.size(0);
  const TensorView& out = args.out;
  const bool out_dtype_ok =
      out.dtype() == config_.act_dtype || out.dtype() == DType::kF64 || out.dtype() == DType::kF32;
  MOE_CHECK(out.ndim() == 2 && out_dtype_ok && out.size(0) == tokens && out.size(1) == hidden &&
                out.device().is_cpu() && out.is_contiguous(),
            "run_moe: out must be a contiguous host ", dtype_name(config_.act_dtype),
            " (or f64/f32 partial sums) [", tokens, ", ", hidden, "], got ", out.str());
  MOE_CHECK(!args.with_shared || shared_,
            "run_moe: with_shared, but the layer has no shared "
            "experts (num_shared_experts = 0)");
  if (args.with_routed) {
    const TensorView& ids = args.topk_ids;
    const TensorView& weights = args.topk_weights;
    MOE_CHECK(ids.ndim() == 2 && ids.dtype() == DType::kI32 && ids.size(0) == tokens &&
                  ids.size(1) == top_k && ids.device().is_cpu() && ids.is_contiguous(),
              "run_moe: topk_ids must be a contiguous host i32[", tokens, ", ", top_k, "], got ",
              ids.str());
    MOE_CHECK(weights.ndim() == 2 && weights.dtype() == DType::kF32 && weights.size(0) == tokens &&
                  weights.size(1) == top_k && weights.device().is_cpu() && weights.is_contiguous(),
              "run_moe: topk_weights must be a contiguous host f32[", tokens, ", ", top_k,
              "], got ", weights.str());
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t k = 0; k < top_k; ++k) {
        const int32_t id = ids.data_as<int32_t>()[t * top_k + k];
        MOE_CHECK(id >= 0 && id < config_.num_experts, "run_moe: topk_ids[", t, ", ", k, "] = ", id,
                  " is not an expert id in [0, ", config_.num_experts, ")");
      }
    }
  }
  for (int64_t t0 = 0; t0 < tokens; t0 += kTokensPerChunk) {
    run_chunk(args, t0, std::min(tokens, t0 + kTokensPerChunk));
  }
}

void ReferenceBackend::run_chunk(const RunMoeArgs& args, int64_t t0, int64_t t1) const {
  const int64_t n = t1 - t0;
  const int64_t hidden = config_.hidden_size;
  const int64_t top_k = config_.top_k;
  const DType act = config_.act_dtype;

  // 1. Pairs grouped by expert; the input rows in double.
  const ChunkPlan plan =
      plan_chunk(args.with_routed ? args.topk_ids.data_as<int32_t>() + t0 * top_k : nullptr, n,
                 top_k, first_local_expert_, experts_, args.with_shared ? &*shared_ : nullptr);
  const std::vector<ExpertTask>& tasks = plan.tasks;
  std::vector<double> x(n * hidden);  // [n, H]
  if (plan.num_pairs > 0) {
    parallel_for(n, 8, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        method_->dequantize_input_row(args.x, t0 + t, x.data() + t * hidden);
      }
    });
  }

  // 2. FC1, then the activation and the intermediate's quantization.
  std::vector<double> gate(plan.inter_total);  // per task [n_e, I]
  std::vector<double> up(plan.inter_total);
  const std::vector<RowBlock> fc1_blocks = row_blocks(tasks, true, hidden);
  parallel_items(static_cast<int64_t>(fc1_blocks.size()), hidden, [&](int64_t i, double* row) {
    const RowBlock& b = fc1_blocks[i];
    const ExpertTask& task = tasks[b.task];
    for (int proj = 0; proj < 2; ++proj) {
      const RefProjWeights& w = proj == 0 ? task.weights->gate : task.weights->up;
      double* dst = (proj == 0 ? gate.data() : up.data()) + task.inter_offset;
      for (int64_t r = b.row_begin; r < b.row_end; ++r) {
        method_->dequantize_row(w, r, row);
        const double bias = w.bias.defined() ? w.bias.data_as<float>()[r] : 0.0;
        for (size_t j = 0; j < task.tokens.size(); ++j) {
          dst[j * task.inter + r] = dot(row, x.data() + task.tokens[j] * hidden, hidden) + bias;
        }
      }
    }
  });

  std::vector<double> inter(plan.inter_total);  // Hq, per task [n_e, I]
  std::vector<std::pair<int, int64_t>> pairs;   // (task, index in task)
  pairs.reserve(plan.num_pairs);
  for (size_t i = 0; i < tasks.size(); ++i) {
    for (size_t j = 0; j < tasks[i].tokens.size(); ++j) {
      pairs.emplace_back(static_cast<int>(i), static_cast<int64_t>(j));
    }
  }
  const int64_t max_inter = std::max(config_.intermediate_size, config_.shared_intermediate_size);
  parallel_items(plan.num_pairs, max_inter, [&](int64_t p, double* h) {
    const ExpertTask& task = tasks[pairs[p].first];
    const int64_t offset = task.inter_offset + pairs[p].second * task.inter;
    for (int64_t r = 0; r < task.inter; ++r) {
      h[r] = gated_activation(gate[offset + r], up[offset + r], config_);
    }
    method_->quantize_intermediate(h, task.inter, inter.data() + offset);
  });

  // 3. FC2.
  std::vector<double> y(plan.num_pairs * hidden);  // [pairs, H]
  const std::vector<RowBlock> fc2_blocks = row_blocks(tasks, false, hidden);
  parallel_items(static_cast<int64_t>(fc2_blocks.size()), max_inter, [&](int64_t i, double* row) {
    const RowBlock& b = fc2_blocks[i];
    const ExpertTask& task = tasks[b.task];
    const RefProjWeights& w = task.weights->down;
    for (int64_t r = b.row_begin; r < b.row_end; ++r) {
      method_->dequantize_row(w, r, row);
      const double bias = w.bias.defined() ? w.bias.data_as<float>()[r] : 0.0;
      for (size_t j = 0; j < task.tokens.size(); ++j) {
        const double* h = inter.data() + task.inter_offset + j * task.inter;
        y[(task.first_pair + j) * hidden + r] = dot(row, h, task.inter) + bias;
      }
    }
  });

  // 4. Per-token reduction: k order, then the shared term, then out; one rounding.
  const float* topk_weights = args.with_routed ? args.topk_weights.data_as<float>() : nullptr;
  const DType out_dtype = args.out.dtype();
  parallel_for(n, 4, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(hidden);
    for (int64_t t = begin; t < end; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t k = 0; k < top_k && args.with_routed; ++k) {
        const int64_t pair = plan.pair_of[t * top_k + k];
        if (pair < 0) continue;
        const double w = topk_weights[(t0 + t) * top_k + k];
        const double* yk = y.data() + pair * hidden;
        for (int64_t c = 0; c < hidden; ++c) acc[c] += w * yk[c];
      }
      if (args.with_shared) {
        const double* ys = y.data() + (plan.shared_first_pair + t) * hidden;
        for (int64_t c = 0; c < hidden; ++c) acc[c] += ys[c];
      }
      const int64_t row = (t0 + t) * hidden;
      if (out_dtype == DType::kF64) {  // wide partial sums: no rounding
        double* out_row = args.out.data_as<double>() + row;
        for (int64_t c = 0; c < hidden && args.accumulate; ++c) acc[c] += out_row[c];
        std::copy(acc.begin(), acc.end(), out_row);
      } else if (out_dtype == DType::kF32) {
        float* out_row = args.out.data_as<float>() + row;
        for (int64_t c = 0; c < hidden && args.accumulate; ++c) acc[c] += out_row[c];
        for (int64_t c = 0; c < hidden; ++c) out_row[c] = static_cast<float>(acc[c]);
      } else {
        uint16_t* out_row = args.out.data_as<uint16_t>() + row;
        if (args.accumulate) {
          for (int64_t c = 0; c < hidden; ++c) acc[c] += act_to_double(out_row[c], act);
        }
        for (int64_t c = 0; c < hidden; ++c) out_row[c] = double_to_act(acc[c], act);
      }
    }
  });
}

const BackendEntry& reference_backend_entry() {
  static const BackendEntry entry{
      "reference",
      &ReferenceBackend::can_implement,
      [](const MoeConfig& config, const Mapping& mapping,
         const DeviceInfo&) -> std::unique_ptr<MoEBackend> {
        return std::make_unique<ReferenceBackend>(config, mapping);
      },
  };
  return entry;
}

}  // namespace moe
