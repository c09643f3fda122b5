// `moe run`: one MoE layer of a real model's shape on random weights, with the factory's
// decision trace, a routing histogram, the time per forward, and (for any backend other
// than the oracle) the output's distance from the reference backend.
//
// EPLB (static mode): --eplb-placement FILE (from `moe eplb plan --out`) runs the layer in
// slot space; the oracle check then compares with the reference layer WITHOUT EPLB (equal
// bit for bit on one rank, where replicas only move a token's experts between identical
// weights). --expert-load-out FILE writes one forward's tokens per expert, summed over the
// ranks, in the load-window format of eplb/expert_load.h (`moe eplb plan --stats FILE`).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "comm/comm_factory.h"
#include "core/compare.h"
#include "core/copy.h"
#include "core/random.h"
#include "eplb/expert_load.h"
#include "eplb/slot_table.h"
#include "moe/commands.h"
#include "moe/moe.h"
#include "moe/mpi_launch.h"
#include "quant/formats.h"
#include "quant/tolerance.h"
#include "routing/routing.h"
#include "weights/checkpoint_source.h"
#include "weights/safetensors.h"

namespace moe::cli {
namespace {

struct RunOptions {
  std::string model = "qwen3-30b-a3b";
  std::string hf_config;
  std::string checkpoint;
  int layer = -1;
  std::string input;
  std::string output;
  int tokens = 32;
  std::string backend = "auto";
  std::string communication = "auto";
  std::string quant;
  uint64_t seed = 0;
  double zipf_skew = 0.0;  // > 0: skews the router logits towards low expert ids
  int repeat = 3;
  std::string eplb_placement;
  std::string expert_load_out;
  std::string ep_partials = "f32";  // f32 or act (MoeConfig::ep_partial_dtype)
};

// The first MoE layer of the checkpoint when --layer is not given.
int checkpoint_layer(const RunOptions& o) {
  if (o.layer >= 0) return o.layer;
  auto ckpt = SafetensorsCheckpoint::open(o.checkpoint);
  const auto layers = list_moe_layers(*ckpt);
  MOE_CHECK(!layers.empty(), o.checkpoint, ": no MoE layer found");
  return layers.front().layer;
}

/// --ep-partials: "f32" or "act" (the layer's act_dtype).
DType ep_partial_dtype(const MoeConfig& config, const std::string& name) {
  MOE_CHECK(name == "f32" || name == "act", "--ep-partials: '", name,
            "' is not f32 or act (the partial sums' type between expert-parallel GPUs)");
  return name == "f32" ? DType::kF32 : config.act_dtype;
}

MoeConfig make_config(const RunOptions& o) {
  if (!o.checkpoint.empty()) {
    MOE_CHECK(o.quant.empty(),
              "--quant does not apply to --checkpoint: the checkpoint's format is used");
    MoeConfig config = checkpoint_layer_config(o.checkpoint, checkpoint_layer(o));
    config.ep_partial_dtype = ep_partial_dtype(config, o.ep_partials);
    config.validate();
    return config;
  }
  MoeConfig config = o.hf_config.empty() ? preset(o.model) : config_from_hf_json_file(o.hf_config);
  if (!o.quant.empty()) {
    config.quant = parse_quant_mode(o.quant);
    config.act_dtype = config.quant == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
  }
  config.ep_partial_dtype = ep_partial_dtype(config, o.ep_partials);
  config.validate();
  return config;
}

void print_histogram(const MoeConfig& config, const Tensor& ids) {
  std::vector<int64_t> count(config.num_experts, 0);
  const auto* id = ids.data_as<const int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) ++count[id[i]];
  const int64_t total = ids.numel();
  const auto [min_it, max_it] = std::minmax_element(count.begin(), count.end());
  const int64_t empty = std::count(count.begin(), count.end(), 0);
  std::printf("\nrouting: %lld tokens x top-%d = %lld assignments over %d experts\n",
              static_cast<long long>(ids.size(0)), config.top_k, static_cast<long long>(total),
              config.num_experts);
  std::printf("  tokens per expert: min %lld, mean %.2f, max %lld; %lld experts got none\n",
              static_cast<long long>(*min_it), static_cast<double>(total) / config.num_experts,
              static_cast<long long>(*max_it), static_cast<long long>(empty));
  std::vector<int> order(config.num_experts);
  for (int e = 0; e < config.num_experts; ++e) order[e] = e;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return count[a] > count[b]; });
  std::printf("  hottest:");
  for (int i = 0; i < std::min(8, config.num_experts); ++i) {
    std::printf(" e%d=%lld", order[i], static_cast<long long>(count[order[i]]));
  }
  std::printf("\n  per expert (16 a row):\n");
  for (int e0 = 0; e0 < config.num_experts; e0 += 16) {
    std::printf("    e%-4d", e0);
    for (int e = e0; e < std::min(e0 + 16, config.num_experts); ++e) {
      std::printf(" %3lld", static_cast<long long>(count[e]));
    }
    std::printf("\n");
  }
}

Tensor random_input(const MoeConfig& config, int64_t tokens, uint64_t seed) {
  Tensor x = Tensor::empty({tokens, config.hidden_size}, config.act_dtype);  // [T, H]
  fill_normal(x, stream_id(seed, 0x78 /* 'x' */));
  return x;
}

// Tensor `x` [T, H] of a safetensors file, converted to the layer's activation type.
Tensor read_input(const std::string& path, const MoeConfig& config) {
  auto file = SafetensorsFile::open(path);
  const StTensorInfo* info = file->find("x");
  MOE_CHECK(info != nullptr, path, ": no tensor named 'x' (expected x [T, ", config.hidden_size,
            "])");
  MOE_CHECK(info->shape.size() == 2 && info->shape[1] == config.hidden_size, path, ": x is ",
            info->str(), ", expected [T, ", config.hidden_size, "]");
  MOE_CHECK(info->dtype->dtype.has_value() && is_float_activation(*info->dtype->dtype), path,
            ": x is ", info->str(), "; expected F32, F16 or BF16");
  const int64_t t = info->shape[0], h = info->shape[1];
  Tensor raw = Tensor::empty({t, h}, *info->dtype->dtype);  // a copy: file offsets may be unaligned
  std::memcpy(raw.data(), file->data(*info), info->nbytes());
  if (raw.dtype() == config.act_dtype) return raw;
  const std::vector<double> v = to_doubles(raw);
  Tensor x = Tensor::empty({t, h}, config.act_dtype);
  for (int64_t i = 0; i < t * h; ++i) {
    const float f = static_cast<float>(v[i]);
    x.data_as<uint16_t>()[i] =
        config.act_dtype == DType::kBF16 ? fmt::float_to_bf16(f) : fmt::float_to_f16(f);
  }
  return x;
}

// One line on the placement: slots, replicas, slots per rank.
std::string eplb_summary(const MoeConfig& config, const std::vector<int32_t>& slot_to_expert,
                         int ep_size) {
  const int num_slots = static_cast<int>(slot_to_expert.size());
  const SlotTable table(make_slot_layout(config.num_experts, num_slots, ep_size), slot_to_expert);
  int replicated = 0, most = 1;
  for (int e = 0; e < config.num_experts; ++e) {
    replicated += table.num_replicas(e) > 1;
    most = std::max(most, table.num_replicas(e));
  }
  return std::to_string(num_slots) + " slots for " + std::to_string(config.num_experts) +
         " experts (" + std::to_string(num_slots - config.num_experts) +
         " redundant: " + std::to_string(replicated) + " expert" + (replicated == 1 ? "" : "s") +
         " replicated, up to " + std::to_string(most) + " copies), " +
         std::to_string(num_slots / ep_size) + " per rank over " + std::to_string(ep_size) +
         " rank" + (ep_size == 1 ? "" : "s") +
         (table.has_duplicate_on_rank() ? "; some rank holds two copies of one expert" : "");
}

// Tokens per expert of every rank summed on rank 0 (collective; empty elsewhere).
std::vector<int64_t> sum_over_ranks(const MpiLaunch& launch, const std::vector<int64_t>& counts) {
  Tensor mine = Tensor::empty({1, static_cast<int64_t>(counts.size())}, DType::kI64);  // [1, E]
  std::copy(counts.begin(), counts.end(), mine.data_as<int64_t>());
  const Tensor all = launch.gather_rows(mine);  // [ranks, E] on rank 0
  if (!launch.is_root()) return {};
  std::vector<int64_t> sum(counts.size(), 0);
  for (int64_t r = 0; r < all.size(0); ++r) {
    for (size_t e = 0; e < sum.size(); ++e) sum[e] += all.data_as<int64_t>()[r * sum.size() + e];
  }
  return sum;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(const RunOptions& o) {
  // Under `mpirun -np N`, rank r runs EP rank r of N on its share of the tokens; rank 0
  // prints and writes the gathered output.
  const MpiLaunch& launch = MpiLaunch::current();
  const bool root = launch.is_root();
  MOE_CHECK(o.tokens >= 0, "--tokens must be >= 0, got ", o.tokens);
  MOE_CHECK(o.repeat >= 1, "--repeat must be >= 1, got ", o.repeat);
  MoeConfig config = make_config(o);
  if (o.input.empty())
    config.max_num_tokens = std::max(launch.size(), std::min(config.max_num_tokens, o.tokens));
  MoeOptions options;
  options.backend = o.backend;
  options.communication = o.communication;
  const bool eplb = !o.eplb_placement.empty();
  if (eplb)
    options.eplb_slot_to_expert = read_eplb_placement(o.eplb_placement, config, launch.size());
  options.count_expert_load = !o.expert_load_out.empty();
  auto [moe, report] = create_moe(config, launch.mapping(), options);
  const Device dev = moe->device();

  if (root) {
    std::printf("layer: %s\n%s\n", o.hf_config.empty() ? "built-in preset" : o.hf_config.c_str(),
                config.summary().c_str());
    if (launch.distributed()) {
      std::printf("expert parallel: %d ranks, this one (rank 0) owns %s [0, %d)\n", launch.size(),
                  eplb ? "slots" : "experts", moe->num_slots() / launch.size());
    }
    if (eplb) {
      std::printf("eplb: static placement %s: %s\n", o.eplb_placement.c_str(),
                  eplb_summary(config, options.eplb_slot_to_expert, launch.size()).c_str());
    }
    std::printf("%s", report.str().c_str());
  }

  std::unique_ptr<WeightSource> weights;
  LoadMode load_mode = LoadMode::kVanilla;
  CheckpointSource* ckpt = nullptr;
  if (o.checkpoint.empty()) {
    weights = make_random_weights(config, o.seed);
  } else {
    auto src = CheckpointSource::open(o.checkpoint, config, checkpoint_layer(o));
    src->enable_progress();
    load_mode = src->natural_load_mode();
    ckpt = src.get();
    weights = std::move(src);
  }
  const auto t0 = std::chrono::steady_clock::now();
  moe->load_weights(*weights, load_mode);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (ckpt) ckpt->finish_progress();
  if (root)
    std::printf("\nweights: %s, loaded in %.2f s%s%s\n", weights->describe().c_str(), load_s,
                ckpt ? "; read " : "", ckpt ? ckpt->stats().str().c_str() : "");

  // Inputs on the host; the router logits are computed once here (x W_gate^T in fp32) and
  // given to every backend, so the oracle check compares the same routing.
  const int64_t h = config.hidden_size;
  Tensor x_host =
      o.input.empty() ? random_input(config, o.tokens, o.seed) : read_input(o.input, config);
  const int64_t t = x_host.size(0);
  Tensor logits_host = Tensor::empty({t, config.num_experts}, DType::kF32);  // [T, E]
  router_logits_cpu(x_host, weights->router_weight(), weights->router_bias(), logits_host);
  if (o.zipf_skew > 0) {
    // logit[e] -= S * ln(1 + e): softmax preferences fall as (1 + e)^-S, a Zipf(S) skew
    // towards the low expert ids (the router's own weights still decide per token).
    float* l = logits_host.data_as<float>();
    for (int64_t i = 0; i < t; ++i) {
      for (int e = 0; e < config.num_experts; ++e) {
        l[i * config.num_experts + e] -= static_cast<float>(o.zipf_skew * std::log1p(e));
      }
    }
  }
  // Every rank builds all T tokens from the seed and runs its share.
  const TokenSlice mine = launch.token_slice(t);
  const int64_t tm = mine.size();
  const Tensor x = copy_to(x_host.view().slice_rows(mine.begin, mine.end), dev);  // [Tm, H]
  const Tensor logits = copy_to(logits_host.view().slice_rows(mine.begin, mine.end), dev);

  Tensor ids = Tensor::empty({tm, config.top_k}, DType::kI32, dev);  // [Tm, k]
  Tensor wts = Tensor::empty({tm, config.top_k}, DType::kF32, dev);  // [Tm, k]
  moe->route(x, logits, ids, wts);
  const Tensor ids_all = launch.gather_rows(copy_to(ids, Device::cpu()));  // [T, k] on rank 0
  const Tensor wts_all = launch.gather_rows(copy_to(wts, Device::cpu()));
  if (root) print_histogram(config, ids_all);

  Tensor poison = Tensor::empty({tm, h}, config.act_dtype);
  fill_poison(poison);
  Tensor out = Tensor::empty({tm, h}, config.act_dtype, dev);  // [Tm, H]
  std::vector<double> times;
  for (int i = 0; i <= o.repeat; ++i) {  // the first run is a warm-up
    // The load file holds one forward: the last one's counts.
    if (i == o.repeat && options.count_expert_load) moe->reset_expert_token_counts();
    copy_tensor(out, poison);
    const auto start = std::chrono::steady_clock::now();
    moe->forward(x, logits, out);
    device_synchronize(dev);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i > 0) times.push_back(s);
  }
  const double sec = launch.max_over_ranks(median(times));
  const double routed_flops = 2.0 * t * config.top_k * 3.0 * h * config.intermediate_size;
  const double shared_flops = 2.0 * t * 3.0 * h * config.shared_intermediate_size;
  // Tokens per expert of the last forward, summed over the ranks (on rank 0).
  std::vector<int64_t> load;
  if (options.count_expert_load) load = sum_over_ranks(launch, moe->expert_token_counts());
  // The gathered output [T, H] on rank 0; the other ranks are done.
  const Tensor out_host = launch.gather_rows(copy_to(out, Device::cpu()));
  if (!root) return 0;
  std::printf(
      "\ntime: %.3f ms per forward on %s (wall clock, median of %d after a warm-up; no CUDA graph:"
      " `moe bench` times graph replays), %.3f TFLOP/s\n",
      sec * 1e3, dev.str().c_str(), o.repeat, (routed_flops + shared_flops) / sec / 1e12);

  const std::vector<double> y = to_doubles(out_host);
  double sum_sq = 0;
  for (double v : y) sum_sq += v * v;
  std::printf("output: %s, rms %.6g", out_host.view().str().c_str(),
              y.empty() ? 0.0 : std::sqrt(sum_sq / y.size()));
  if (y.size() >= 4) std::printf(", out[0][0..3] = %.6g %.6g %.6g %.6g", y[0], y[1], y[2], y[3]);
  std::printf("\n");

  if (!o.output.empty()) {
    write_safetensors(o.output,
                      {st_write_tensor("y", out_host), st_write_tensor("topk_ids", ids_all),
                       st_write_tensor("topk_weights", wts_all)});
    std::printf("wrote y, topk_ids, topk_weights to %s\n", o.output.c_str());
  }

  // The counted load must be the routing histogram of one forward.
  bool load_ok = true;
  if (options.count_expert_load) {
    std::vector<int64_t> histogram(config.num_experts, 0);
    count_expert_tokens({ids_all.data_as<const int32_t>(), static_cast<size_t>(ids_all.numel())},
                        histogram);
    load_ok = load == histogram;
    ExpertLoadWindow window(config.num_experts, 1);
    window.add(load);
    write_expert_load_file(o.expert_load_out, window);
    std::printf(
        "expert load: one forward's tokens per expert%s written to %s (%s the routing "
        "histogram)\n",
        launch.distributed() ? ", summed over the ranks," : "", o.expert_load_out.c_str(),
        load_ok ? "equals" : "DIFFERS FROM");
  }

  if (moe->backend_name() == "reference" && !launch.distributed() && !eplb) {
    std::printf("oracle check: this backend is the oracle (float64 accumulation)\n");
    return load_ok ? 0 : 1;
  }
  MoeOptions ref_options;
  ref_options.backend = "reference";
  auto ref = create_moe(config, Mapping{}, ref_options).moe;
  ref->load_weights(*weights);
  Tensor ref_out = Tensor::empty({t, h}, config.act_dtype);
  ref->forward(x_host, logits_host, ref_out);
  const double err = relative_l2(out_host, ref_out);
  double tol = layer_tolerance(config.quant);
  const bool identical = out_host.nbytes() == ref_out.nbytes() &&
                         std::memcmp(out_host.data(), ref_out.data(), ref_out.nbytes()) == 0;
  // EPLB on the oracle itself, on one rank: replicas hold the same weights and a token's
  // experts are summed in top-k order, so nothing may change.
  const bool exact = eplb && moe->backend_name() == "reference" && !launch.distributed();
  if (exact) tol = 0;
  const bool ok = exact ? identical : err <= tol;
  std::printf("oracle check: relative L2 vs reference%s %.3e (tolerance %.1e for %s)%s: %s\n",
              eplb ? " without EPLB" : "", err, tol,
              std::string(quant_mode_name(config.quant)).c_str(),
              identical ? ", bit-identical" : "", ok ? "ok" : "FAILED");
  if (eplb) {
    std::printf("eplb: %d slots, %d redundant; with EPLB the oracle check %s\n", moe->num_slots(),
                moe->num_slots() - config.num_experts, ok ? "still passes" : "FAILS");
  }
  return ok && load_ok ? 0 : 1;
}

}  // namespace

Command add_run_command(CLI::App& app) {
  auto opts = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run",
      "Run one MoE layer on random weights: prints the layer, the backend chosen and the ones\n"
      "rejected with reasons, a routing histogram, the time per forward, and the difference\n"
      "from the reference backend when another backend ran.");
  std::string presets;
  for (const auto& p : preset_names()) presets += (presets.empty() ? "" : ", ") + p;
  cmd->add_option("--model", opts->model, "Built-in model preset: " + presets)
      ->capture_default_str();
  cmd->add_option("--hf-config", opts->hf_config,
                  "A model's Hugging Face config.json (overrides --model)");
  cmd->add_option("--checkpoint", opts->checkpoint,
                  "A Hugging Face style checkpoint directory (safetensors): run one of its MoE "
                  "layers with its real weights; config.json gives the shape and routing");
  cmd->add_option("--layer", opts->layer,
                  "With --checkpoint: the layer index (default: the first MoE layer)");
  cmd->add_option("--input", opts->input,
                  "Safetensors file with tensor x [T, H] to run on (instead of random tokens)");
  cmd->add_option(
      "--output", opts->output,
      "Write y [T, H], topk_ids [T, k] and topk_weights [T, k] to this safetensors file");
  cmd->add_option("--tokens", opts->tokens, "Tokens in the forward")->capture_default_str();
  std::string backends = "auto";
  for (const auto& b : backend_names()) backends += ", " + b;
  cmd->add_option("--backend", opts->backend, "Backend: " + backends)->capture_default_str();
  std::string comms = "auto";
  for (auto c : communication_names()) comms += ", " + std::string(c);
  cmd->add_option("--communication", opts->communication,
                  "Expert-parallel exchange under mpirun: " + comms)
      ->capture_default_str();
  std::string quants;
  for (QuantMode q : all_quant_modes())
    quants += (quants.empty() ? "" : ", ") + std::string(quant_mode_name(q));
  cmd->add_option("--quant", opts->quant, "Weight format (default: the model's): " + quants);
  cmd->add_option("--zipf-skew", opts->zipf_skew,
                  "Skew the router logits by -S * ln(1 + expert): skewed (Zipf-like) routing")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", opts->seed, "Seed of the random weights and inputs")
      ->capture_default_str();
  cmd->add_option("--repeat", opts->repeat, "Timed forwards (the median is printed)")
      ->capture_default_str();
  cmd->add_option("--ep-partials", opts->ep_partials,
                  "Under mpirun on GPUs: the type partial sums travel in to the tokens' ranks, "
                  "f32 (summed unrounded) or act (the activation type: half the combine's "
                  "bytes, one rounding per partial)")
      ->capture_default_str();
  cmd->add_option("--eplb-placement", opts->eplb_placement,
                  "EPLB static mode: a placement file (moe eplb plan --out) mapping slots to "
                  "experts; slots must divide over the ranks");
  cmd->add_option("--expert-load-out", opts->expert_load_out,
                  "Write one forward's tokens per expert (summed over the ranks) as an expert-load "
                  "file (moe eplb plan --stats)");
  return [opts] { return run(*opts); };
}

}  // namespace moe::cli
