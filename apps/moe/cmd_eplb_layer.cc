// `moe eplb layer`: EPLB online mode measured on the expert-parallel layer (issue "EPLB").
//
//   mpirun -np 2 moe eplb layer [--model deepseek-v3] [--quant fp8_block] [--tokens 512]
//       [--zipf 1.0] [--redundant 32] [--interval 4] [--forwards 20] [--out FILE]
//       [--backend grouped] [--communication auto] [--hidden H --intermediate I]
//       [--step-mb 16] [--distinct-experts 8]
//
// Weights: random, the experts cycling over --distinct-experts generated ones (times do not
// depend on the values; every slot's bytes still move). Every rank routes --tokens tokens of its
// own whose router logits are skewed towards a random permutation of the experts: logit[e] -= S *
// ln(1 + rank(e)), a Zipf(S) preference. Then, timing each forward by the host clock around forward
// + stream synchronisation (the time the caller sees; the maximum over the ranks, which wait for
// each other):
//   1. the layer without EPLB: the median of --forwards forwards;
//   2. the same layer in EPLB online mode with E + --redundant slots, starting from the
//      placement of a uniform load; after --interval forwards the statistics drive a
//      re-placement whose weights move (NCCL send/recv on a side stream) while forwards go
//      on, swapped in at a later forward's start. Reported: the steady state before and
//      after, each forward while the migration is pending (and the worst), the migration's
//      time (staging start to swap), slots moved, bytes per rank, imbalance before/after.
// Rank 0 prints a summary and writes JSON (--out).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "core/copy.h"
#include "core/device_info.h"
#include "core/random.h"
#include "moe/commands.h"
#include "moe/moe.h"
#include "moe/mpi_launch.h"
#include "routing/routing.h"

namespace moe::cli {
namespace {

struct LayerOptions {
  std::string model = "deepseek-v3";
  std::string quant = "fp8_block";
  std::string backend = "grouped";
  std::string communication = "auto";
  int tokens = 512;  // per rank
  double zipf = 1.0;
  int redundant = 32;
  double step_mb = 16;
  int distinct = 8;  // > 0: experts share the weights of `distinct` experts (fast loading)  //
                     // migration bytes per forward boundary (MiB); 0: all at once
  int interval = 4;
  int forwards = 20;
  uint64_t seed = 1;
  int hidden = 0;        // > 0: overrides the preset's hidden size
  int intermediate = 0;  // > 0: overrides its expert (and shared, x shared count) size
  std::string out;
};

/// Experts e and e + K share expert e % K's weights (built once, kept): loading a layer of
/// hundreds of real-sized experts then costs K experts' generation. Times do not depend on
/// the values; the migration still moves every slot's bytes.
class CyclingWeightSource final : public WeightSource {
 public:
  CyclingWeightSource(WeightSource& source, int distinct) : source_(source), distinct_(distinct) {}
  TensorView expert_tensor(int expert, Proj proj, Part part) override {
    const int e = expert == kSharedExpert ? expert : expert % distinct_;
    const auto key = std::make_tuple(e, static_cast<int>(proj), static_cast<int>(part));
    auto it = cache_.find(key);
    if (it == cache_.end()) {
      const TensorView v = source_.expert_tensor(e, proj, part);
      Tensor copy;
      if (!v.empty()) copy = copy_to(v, Device::cpu());
      it = cache_.emplace(key, std::move(copy)).first;
    }
    return it->second.defined() ? it->second.view() : TensorView();
  }
  TensorView router_weight() override { return source_.router_weight(); }
  TensorView router_bias() override { return source_.router_bias(); }
  TensorView correction_bias() override { return source_.correction_bias(); }
  std::string describe() const override {
    return source_.describe() + " (" + std::to_string(distinct_) + " distinct experts, cycled)";
  }

 private:
  WeightSource& source_;
  int distinct_;
  std::map<std::tuple<int, int, int>, Tensor> cache_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

/// Loads `layer`'s weights; rank 0 says how long it took (loading real-sized layers is slow).
void load_timed(ConfigurableMoE& layer, WeightSource& weights, const char* what) {
  const auto t0 = std::chrono::steady_clock::now();
  layer.load_weights(weights);
  if (!MpiLaunch::current().is_root()) return;
  std::printf("%s: weights loaded in %.1f s\n", what,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::fflush(stdout);
}

/// One forward's time (s) as the caller sees it, the maximum over the ranks.
double timed_forward(ConfigurableMoE& layer, const Tensor& x, const Tensor& logits,
                     const Tensor& out) {
  const MpiLaunch& launch = MpiLaunch::current();
  launch.barrier();
  const auto start = std::chrono::steady_clock::now();
  layer.forward(x, logits, out);
  stream_synchronize(layer.device(), nullptr);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return launch.max_over_ranks(s);
}

int run_layer(const LayerOptions& o) {
  const MpiLaunch& launch = MpiLaunch::current();
  const bool root = launch.is_root();
  MOE_CHECK(o.tokens >= 1 && o.forwards >= 1 && o.interval >= 1 && o.redundant >= 0,
            "--tokens, --forwards and --interval must be >= 1 and --redundant >= 0");
  MoeConfig config = preset(o.model);
  if (!o.quant.empty()) config.quant = parse_quant_mode(o.quant);
  if (o.hidden > 0) config.hidden_size = o.hidden;
  if (o.intermediate > 0) {
    const int64_t shared = config.intermediate_size > 0
                               ? config.shared_intermediate_size / config.intermediate_size
                               : 0;
    config.intermediate_size = o.intermediate;
    config.shared_intermediate_size = shared * o.intermediate;
  }
  config.max_num_tokens = o.tokens * launch.size();  // one chunk per forward
  config.validate();
  const int e = config.num_experts;
  MOE_CHECK((e + o.redundant) % launch.size() == 0, "experts + --redundant (", e + o.redundant,
            ") must divide over ", launch.size(), " ranks");
  auto random = make_random_weights(config, o.seed);
  std::unique_ptr<WeightSource> cycling;
  if (o.distinct > 0 && o.distinct < e)
    cycling = std::make_unique<CyclingWeightSource>(*random, o.distinct);
  WeightSource* weights = cycling ? cycling.get() : random.get();

  // This rank's tokens and skewed logits [T, E].
  Tensor x_host = Tensor::empty({o.tokens, config.hidden_size}, config.act_dtype);
  fill_normal(x_host, stream_id(o.seed, 100 + launch.rank()));
  Tensor logits_host = Tensor::empty({o.tokens, e}, DType::kF32);
  router_logits_cpu(x_host, weights->router_weight(), weights->router_bias(), logits_host);
  std::vector<int> popularity(e);  // expert -> its place in the Zipf order (same on all ranks)
  std::iota(popularity.begin(), popularity.end(), 0);
  Tensor shuffle = Tensor::empty({e}, DType::kF32);
  fill_normal(shuffle, stream_id(o.seed, 7));
  std::sort(popularity.begin(), popularity.end(), [&](int a, int b) {
    return shuffle.data_as<float>()[a] < shuffle.data_as<float>()[b];
  });
  std::vector<int> place(e);
  for (int i = 0; i < e; ++i) place[popularity[i]] = i;
  for (int64_t t = 0; t < o.tokens; ++t) {
    for (int j = 0; j < e; ++j) {
      logits_host.data_as<float>()[t * e + j] -= static_cast<float>(o.zipf * std::log1p(place[j]));
    }
  }

  MoeOptions plain_options;
  plain_options.backend = o.backend;
  plain_options.communication = o.communication;
  nlohmann::json result;
  std::vector<double> plain_times;
  {
    auto [plain, report] = create_moe(config, launch.mapping(), plain_options);
    if (root) std::printf("%s%s\n", config.summary().c_str(), report.str().c_str());
    load_timed(*plain, *weights, "layer without EPLB");
    const Tensor x = copy_to(x_host, plain->device()),
                 logits = copy_to(logits_host, plain->device());
    const Tensor out =
        Tensor::empty({o.tokens, config.hidden_size}, config.act_dtype, plain->device());
    timed_forward(*plain, x, logits, out);  // warm-up
    for (int i = 0; i < o.forwards; ++i)
      plain_times.push_back(timed_forward(*plain, x, logits, out));
    result["communication"] = report.communication;
    result["backend"] = report.backend;
    result["device"] = report.device;
  }

  MoeOptions options = plain_options;
  options.eplb_online.rebalance_interval = o.interval;
  options.eplb_online.num_slots = e + o.redundant;
  options.eplb_online.method = "greedy";
  options.eplb_online.migration_step_bytes = static_cast<int64_t>(o.step_mb * (1 << 20));
  auto layer = create_moe(config, launch.mapping(), options).moe;
  load_timed(*layer, *weights, "layer with EPLB online");
  const Tensor x = copy_to(x_host, layer->device()), logits = copy_to(logits_host, layer->device());
  const Tensor out =
      Tensor::empty({o.tokens, config.hidden_size}, config.act_dtype, layer->device());
  // Forward i runs step i + 1 at its start: the re-placement starts at forward `interval - 1`.
  std::vector<double> before, during, after;
  std::vector<nlohmann::json> timeline;
  int64_t migrations = 0;
  // Until forwards after the migration are timed -- or, without one (the first placement
  // balanced well enough), three intervals.
  bool pending = false;
  for (int i = 0;; ++i) {
    if (migrations == 0 && !pending && i >= 3 * o.interval + o.forwards) break;
    if (migrations > 0 && static_cast<int>(after.size()) >= o.forwards) break;
    const double s = timed_forward(*layer, x, logits, out);
    const EplbStatus st = layer->eplb_status();
    const bool swapped_now = st.migrations > migrations;
    if (i == 0) {
      // the first forward warms up
    } else if (migrations == 0 && !st.migration_pending && !swapped_now) {
      before.push_back(s);
    } else if (st.migration_pending || swapped_now) {
      during.push_back(s);
    } else {
      after.push_back(s);
    }
    timeline.push_back({{"forward", i},
                        {"ms", s * 1e3},
                        {"pending", st.migration_pending},
                        {"swapped", swapped_now}});
    migrations = st.migrations;
    pending = st.migration_pending;
  }
  const EplbStatus st = layer->eplb_status();
  const double plain_ms = median(plain_times) * 1e3, before_ms = median(before) * 1e3;
  const double after_ms = median(after) * 1e3;
  const double worst_ms =
      during.empty() ? 0 : *std::max_element(during.begin(), during.end()) * 1e3;
  const int64_t bytes_in = static_cast<int64_t>(launch.max_over_ranks(double(st.last_bytes_in)));
  if (!root) return 0;
  if (st.migrations == 0) {
    std::printf(
        "\nno migration: every re-placement was skipped (%s); without EPLB %.3f ms, with "
        "the first placement %.3f ms\n",
        st.last_skip_reason.c_str(), plain_ms, before_ms);
    return 0;
  }
  std::printf(
      "\nEPLB online, %d ranks, %d tokens per rank, Zipf(%.2f) routing, %d slots (%d redundant)\n"
      "  without EPLB:               %8.3f ms (median of %d)\n"
      "  EPLB, first placement:      %8.3f ms (median of %zu)\n"
      "  EPLB, after re-placement:   %8.3f ms (median of %zu): %.3fx the layer without EPLB\n"
      "  migration (%s): %d slots moved (%d between ranks), %.1f MB into the busiest rank, "
      "%.3f ms from staging start to swap\n"
      "  forwards while pending (incl. the swap): %zu, worst %.3f ms = %.3fx the steady state\n"
      "  imbalance of the window's load: %.3f -> %.3f\n",
      launch.size(), o.tokens, o.zipf, st.num_slots, o.redundant, plain_ms, o.forwards, before_ms,
      before.size(), after_ms, after.size(), plain_ms / after_ms, st.transport.c_str(),
      st.last_slots_moved, st.last_remote_moves, bytes_in / 1e6, st.last_migration_ms,
      during.size(), worst_ms, worst_ms / after_ms, st.last_imbalance_before,
      st.last_imbalance_after);
  result["model"] = o.model;
  result["quant"] = std::string(quant_mode_name(config.quant));
  result["ranks"] = launch.size();
  result["tokens_per_rank"] = o.tokens;
  result["zipf"] = o.zipf;
  result["num_slots"] = st.num_slots;
  result["redundant_slots"] = o.redundant;
  result["migration_step_mib"] = o.step_mb;
  result["ms_without_eplb"] = plain_ms;
  result["ms_eplb_first_placement"] = before_ms;
  result["ms_eplb_after"] = after_ms;
  result["speedup_eplb"] = plain_ms / after_ms;
  result["migration_ms"] = st.last_migration_ms;
  result["migration_transport"] = st.transport;
  result["slots_moved"] = st.last_slots_moved;
  result["remote_moves"] = st.last_remote_moves;
  result["bytes_into_busiest_rank"] = bytes_in;
  result["worst_forward_during_migration_ms"] = worst_ms;
  result["worst_over_steady"] = worst_ms / after_ms;
  result["imbalance_before"] = st.last_imbalance_before;
  result["imbalance_after"] = st.last_imbalance_after;
  result["timeline"] = timeline;
  if (!o.out.empty()) {
    std::ofstream(o.out) << result.dump(2) << "\n";
    std::printf("wrote %s\n", o.out.c_str());
  }
  return 0;
}

}  // namespace

Subcommand add_eplb_layer_command(CLI::App& eplb) {
  auto o = std::make_shared<LayerOptions>();
  CLI::App* cmd = eplb.add_subcommand(
      "layer",
      "The expert-parallel layer with and without EPLB online mode on Zipf-skewed routing\n"
      "(run under mpirun): steady-state times, one migration's time and the worst forward\n"
      "while it runs.");
  cmd->add_option("--model", o->model, "Preset")->capture_default_str();
  cmd->add_option("--quant", o->quant, "Weight format")->capture_default_str();
  cmd->add_option("--backend", o->backend, "Backend")->capture_default_str();
  cmd->add_option("--communication", o->communication, "Strategy")->capture_default_str();
  cmd->add_option("--tokens", o->tokens, "Tokens per rank per forward")->capture_default_str();
  cmd->add_option("--zipf", o->zipf, "Zipf exponent of the routing skew")->capture_default_str();
  cmd->add_option("--redundant", o->redundant, "Slots beyond the experts")->capture_default_str();
  cmd->add_option("--interval", o->interval, "Forwards before the re-placement")
      ->capture_default_str();
  cmd->add_option("--forwards", o->forwards, "Timed forwards per steady state")
      ->capture_default_str();
  cmd->add_option("--step-mb", o->step_mb,
                  "Weights moved per forward boundary, MiB over all ranks (0: all at once)")
      ->capture_default_str();
  cmd->add_option("--distinct-experts", o->distinct,
                  "Experts whose weights are generated (the others repeat them; 0: all)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed")->capture_default_str();
  cmd->add_option("--hidden", o->hidden, "Override the preset's hidden size (scaled-down runs)");
  cmd->add_option("--intermediate", o->intermediate,
                  "Override the preset's expert intermediate size (shared MLP scaled alike)");
  cmd->add_option("--out", o->out, "JSON results (rank 0)");
  return {cmd, [o] { return run_layer(*o); }};
}

}  // namespace moe::cli
