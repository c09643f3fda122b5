// `moe run`: one MoE layer of a real model's shape on random weights, with the factory's
// decision trace, a routing histogram, the time per forward, and (for any backend other
// than the oracle) the output's distance from the reference backend.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/compare.h"
#include "core/random.h"
#include "moe/commands.h"
#include "moe/moe.h"
#include "quant/tolerance.h"

namespace moe::cli {
namespace {

struct RunOptions {
  std::string model = "qwen3-30b-a3b";
  std::string hf_config;
  int tokens = 32;
  std::string backend = "auto";
  std::string quant;
  uint64_t seed = 0;
  int repeat = 3;
};

MoeConfig make_config(const RunOptions& o) {
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int run(const RunOptions& o) {
  MOE_CHECK(o.tokens >= 0, "--tokens must be >= 0, got ", o.tokens);
  MOE_CHECK(o.repeat >= 1, "--repeat must be >= 1, got ", o.repeat);
  const MoeConfig config = make_config(o);
  MoeOptions options;
  options.backend = o.backend;
  auto [moe, report] = create_moe(config, Mapping{}, options);

  std::printf("layer: %s\n%s\n", o.hf_config.empty() ? "built-in preset" : o.hf_config.c_str(),
              config.summary().c_str());
  std::printf("%s", report.str().c_str());
  MOE_CHECK(moe->device().is_cpu(), "moe run drives host tensors; the ", moe->backend_name(),
            " backend runs on ", moe->device().str());

  auto weights = make_random_weights(config, o.seed);
  const auto t0 = std::chrono::steady_clock::now();
  moe->load_weights(*weights);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\nweights: %s, loaded in %.2f s\n", weights->describe().c_str(), load_s);

  const int64_t t = o.tokens, h = config.hidden_size;
  Tensor x = Tensor::empty({t, h}, config.act_dtype);  // [T, H]
  fill_normal(x, stream_id(o.seed, 0x78 /* 'x' */));
  Tensor ids = Tensor::empty({t, config.top_k}, DType::kI32);  // [T, k]
  Tensor wts = Tensor::empty({t, config.top_k}, DType::kF32);  // [T, k]
  moe->route(x, {}, ids, wts);
  print_histogram(config, ids);

  Tensor out = Tensor::empty({t, h}, config.act_dtype);  // [T, H]
  std::vector<double> times;
  for (int i = 0; i <= o.repeat; ++i) {  // the first run is a warm-up
    fill_poison(out);
    const auto start = std::chrono::steady_clock::now();
    moe->forward(x, {}, out);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i > 0) times.push_back(s);
  }
  const double sec = median(times);
  const double routed_flops = 2.0 * t * config.top_k * 3.0 * h * config.intermediate_size;
  const double shared_flops = 2.0 * t * 3.0 * h * config.shared_intermediate_size;
  std::printf("\ntime: %.3f ms per forward (median of %d after a warm-up) on %s, %.3f TFLOP/s\n",
              sec * 1e3, o.repeat, moe->device().str().c_str(),
              (routed_flops + shared_flops) / sec / 1e12);

  const std::vector<double> y = to_doubles(out);
  double sum_sq = 0;
  for (double v : y) sum_sq += v * v;
  std::printf("output: %s, rms %.6g", out.view().str().c_str(),
              y.empty() ? 0.0 : std::sqrt(sum_sq / y.size()));
  if (!y.empty()) std::printf(", out[0][0..3] = %.6g %.6g %.6g %.6g", y[0], y[1], y[2], y[3]);
  std::printf("\n");

  if (moe->backend_name() == "reference") {
    std::printf("oracle check: this backend is the oracle (float64 accumulation)\n");
    return 0;
  }
  MoeOptions ref_options;
  ref_options.backend = "reference";
  auto ref = create_moe(config, Mapping{}, ref_options).moe;
  ref->load_weights(*weights);
  Tensor ref_out = Tensor::empty({t, h}, config.act_dtype);
  ref->forward(x, {}, ref_out);
  const double err = relative_l2(out, ref_out);
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
  cmd->add_option("--tokens", opts->tokens, "Tokens in the forward")->capture_default_str();
  std::string backends = "auto";
  for (const auto& b : backend_names()) backends += ", " + b;
  cmd->add_option("--backend", opts->backend, "Backend: " + backends)->capture_default_str();
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
