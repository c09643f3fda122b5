// `moe run`: one MoE layer of a real model's shape on random weights, with the factory's
// decision trace, a routing histogram, the time per forward, and (for any backend other
// than the oracle) the output's distance from the reference backend.
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
  int repeat = 3;
};

// The first MoE layer of the checkpoint when --layer is not given.
int checkpoint_layer(const RunOptions& o) {
  if (o.layer >= 0) return o.layer;
  auto ckpt = SafetensorsCheckpoint::open(o.checkpoint);
  const auto layers = list_moe_layers(*ckpt);
  MOE_CHECK(!layers.empty(), o.checkpoint, ": no MoE layer found");
  return layers.front().layer;
}

MoeConfig make_config(const RunOptions& o) {
  if (!o.checkpoint.empty()) {
    MOE_CHECK(o.quant.empty(),
              "--quant does not apply to --checkpoint: the checkpoint's format is used");
    MoeConfig config = checkpoint_layer_config(o.checkpoint, checkpoint_layer(o));
    config.validate();
    return config;
  }
  MoeConfig config = o.hf_config.empty() ? preset(o.model) : config_from_hf_json_file(o.hf_config);
  if (!o.quant.empty()) {
    config.quant = parse_quant_mode(o.quant);
    config.act_dtype = config.quant == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
  }
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
  auto [moe, report] = create_moe(config, launch.mapping(), options);
  const Device dev = moe->device();

  if (root) {
    std::printf("layer: %s\n%s\n", o.hf_config.empty() ? "built-in preset" : o.hf_config.c_str(),
                config.summary().c_str());
    if (launch.distributed()) {
      std::printf("expert parallel: %d ranks, this one (rank 0) owns experts [0, %d)\n",
                  launch.size(), config.num_experts / launch.size());
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

  if (moe->backend_name() == "reference" && !launch.distributed()) {
    std::printf("oracle check: this backend is the oracle (float64 accumulation)\n");
    return 0;
  }
  MoeOptions ref_options;
  ref_options.backend = "reference";
  auto ref = create_moe(config, Mapping{}, ref_options).moe;
  ref->load_weights(*weights);
  Tensor ref_out = Tensor::empty({t, h}, config.act_dtype);
  ref->forward(x_host, logits_host, ref_out);
  const double err = relative_l2(out_host, ref_out);
  const double tol = layer_tolerance(config.quant);
  std::printf("oracle check: relative L2 vs reference %.3e (tolerance %.1e for %s): %s\n", err, tol,
              std::string(quant_mode_name(config.quant)).c_str(), err <= tol ? "ok" : "FAILED");
  return err <= tol ? 0 : 1;
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
  cmd->add_option("--seed", opts->seed, "Seed of the random weights and inputs")
      ->capture_default_str();
  cmd->add_option("--repeat", opts->repeat, "Timed forwards (the median is printed)")
      ->capture_default_str();
  return [opts] { return run(*opts); };
}

}  // namespace moe::cli
