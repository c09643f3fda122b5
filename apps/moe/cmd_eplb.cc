// `moe eplb`: expert-parallel load balancing on the host (src/eplb/).
//
//   moe eplb plan  --slots N --ranks R [--nodes M] [--groups G] [--method hierarchical|greedy]
//                  (--stats FILE | --zipf S --experts E --tokens T [--top-k K] [--seed X])
//                  [--json] [--out FILE]
//       The placement of the load (a statistics file of expert_load.h's format, or a
//       synthetic Zipf(S) load of T x K assignments): per rank its load and its slots'
//       experts, and the imbalance (max / mean rank load) before (experts contiguous, no
//       replicas) and after. --json prints the same as JSON. --out FILE also writes the
//       placement file that `moe run --eplb-placement` reads (read_eplb_placement):
//         {"num_experts": E, "num_slots": S, "num_ranks": R, "slot_to_expert": [S ids],
//          "method": ..., "imbalance_before": ..., "imbalance_after": ...}
//       (the reader needs the first four keys and ignores the others).
//   moe eplb bench [--out FILE] [--seeds N] [--experts E] [--tokens T] [--top-k K] [--zipf S]
//       DeepSeek-V3-style Zipf loads (default 256 experts, 4096 tokens x top-8): imbalance
//       before / after of both methods at 8 and 64 ranks with 32, 64 and 128 redundant slots
//       (hierarchical with 8 expert groups and with one group per expert, 8 GPUs per node),
//       averaged (and worst) over N seeds, and the time one placement takes. Prints a table
//       and writes JSON (default bench/results/eplb-placement.json).
//   moe eplb layer [...]   (cmd_eplb_layer.cc; under mpirun) the expert-parallel layer
//       with and without EPLB online mode on skewed routing, and one migration's cost.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eplb/expert_load.h"
#include "eplb/placement.h"
#include "moe/commands.h"
#include "moe/errors.h"

namespace moe::cli {
namespace {

struct PlanOptions {
  std::string stats;
  std::optional<double> zipf;
  int experts = 0;
  int64_t tokens = 0;
  int top_k = 1;
  uint64_t seed = 1;
  int slots = 0;
  int ranks = 0;
  int nodes = 1;
  int groups = 0;
  std::string method = "hierarchical";
  bool json = false;
  std::string out;
};

struct BenchOptions {
  std::string out = "bench/results/eplb-placement.json";
  int seeds = 10;
  int experts = 256;
  int64_t tokens = 4096;
  int top_k = 8;
  double zipf = 1.0;
};

// Microseconds one call of `fn` takes: repeated until 20 ms have passed (at least 3 calls).
template <class Fn>
double time_us(Fn&& fn) {
  using Clock = std::chrono::steady_clock;
  fn();  // warm-up
  int calls = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  while (calls < 3 || elapsed < 0.02) {
    fn();
    ++calls;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  }
  return elapsed * 1e6 / calls;
}

// The load to place, and one line saying where it came from.
std::vector<double> plan_load(const PlanOptions& o, std::string& source) {
  if (!o.stats.empty()) {
    MOE_CHECK(!o.zipf && o.experts == 0 && o.tokens == 0,
              "--stats reads the load from a file; do not combine it with --zipf, --experts or "
              "--tokens");
    const ExpertLoadWindow window = read_expert_load_file(o.stats);
    source = o.stats + ": " + std::to_string(window.size()) + " forward" +
             (window.size() == 1 ? "" : "s") + " (window " + std::to_string(window.capacity()) +
             ")";
    return window.total_load();
  }
  MOE_CHECK(o.zipf, "give the load: --stats FILE, or --zipf S --experts E --tokens T");
  MOE_CHECK(o.experts >= 1, "--zipf needs --experts E (>= 1), got ", o.experts);
  MOE_CHECK(o.tokens >= 1, "--zipf needs --tokens T (>= 1), got ", o.tokens);
  MOE_CHECK(o.top_k >= 1, "--top-k must be >= 1, got ", o.top_k);
  const int64_t assignments = o.tokens * o.top_k;
  const std::vector<int64_t> counts = zipf_expert_load(o.experts, assignments, *o.zipf, o.seed);
  char line[160];
  std::snprintf(line, sizeof line,
                "Zipf(%g) over a random permutation (seed %llu): %lld tokens x "
                "top-%d = %lld assignments",
                *o.zipf, static_cast<unsigned long long>(o.seed), static_cast<long long>(o.tokens),
                o.top_k, static_cast<long long>(assignments));
  source = line;
  return {counts.begin(), counts.end()};
}

nlohmann::json placement_json(const Placement& p, const std::vector<double>& load) {
  const SlotTable table = p.table();
  nlohmann::json ranks = nlohmann::json::array();
  for (int r = 0; r < p.layout.num_ranks; ++r) {
    const auto experts = table.rank_experts(r);
    ranks.push_back({{"rank", r},
                     {"load", p.rank_load[r]},
                     {"load_before", p.rank_load_before[r]},
                     {"experts", std::vector<int32_t>(experts.begin(), experts.end())}});
  }
  return {{"method", placement_method_name(p.method)},
          {"num_experts", p.layout.num_experts},
          {"num_slots", p.layout.num_slots},
          {"num_ranks", p.layout.num_ranks},
          {"num_nodes", p.num_nodes},
          {"num_groups", p.num_groups},
          {"total_load", std::accumulate(load.begin(), load.end(), 0.0)},
          {"slot_to_expert", p.slot_to_expert},
          {"ranks", ranks},
          {"imbalance_before", p.imbalance_before},
          {"imbalance", p.imbalance},
          {"duplicate_on_rank", p.duplicate_on_rank},
          {"warnings", p.warnings}};
}

// The placement file of `moe eplb plan --out` (the file comment); throws moe::Error naming
// the path when it cannot be written.
void write_placement_file(const std::string& path, const Placement& p) {
  const nlohmann::json j = {{"num_experts", p.layout.num_experts},
                            {"num_slots", p.layout.num_slots},
                            {"num_ranks", p.layout.num_ranks},
                            {"slot_to_expert", p.slot_to_expert},
                            {"method", placement_method_name(p.method)},
                            {"imbalance_before", p.imbalance_before},
                            {"imbalance_after", p.imbalance}};
  std::ofstream out(path);
  MOE_CHECK(out.good(), "cannot open '", path, "' for writing the placement");
  out << j.dump(2) << "\n";
  out.close();
  MOE_CHECK(out.good(), "writing the placement to '", path, "' failed");
}

int plan(const PlanOptions& o) {
  std::string source;
  const std::vector<double> load = plan_load(o, source);
  PlacementRequest request;
  request.method = parse_placement_method(o.method);
  request.num_slots = o.slots;
  request.num_ranks = o.ranks;
  request.num_nodes = o.nodes;
  request.num_groups = o.groups;
  Placement p;
  const double us = time_us([&] { p = place_experts(load, request); });
  if (!o.out.empty()) write_placement_file(o.out, p);
  if (o.json) {
    nlohmann::json j = placement_json(p, load);
    j["load_source"] = source;
    j["placement_us"] = us;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }

  const SlotLayout& layout = p.layout;
  const double total = std::accumulate(load.begin(), load.end(), 0.0);
  const double mean = total / layout.num_ranks;
  std::printf("load: %s\n", source.c_str());
  std::printf("      %.0f tokens over %d experts (hottest expert: %.1f%% of the load)\n", total,
              layout.num_experts,
              total > 0 ? 100.0 * *std::max_element(load.begin(), load.end()) / total : 0.0);
  std::printf("placement: %s, %d slots (%d redundant) over %d ranks = %d per rank",
              std::string(placement_method_name(p.method)).c_str(), layout.num_slots,
              layout.num_slots - layout.num_experts, layout.num_ranks, layout.slots_per_rank());
  if (p.method == PlacementMethod::kHierarchical) {
    std::printf(", %d node%s, %d expert groups", p.num_nodes, p.num_nodes == 1 ? "" : "s",
                p.num_groups);
  }
  std::printf("\n\n");

  // Per rank: load after (and its ratio to the mean), load before, the slots' experts; an
  // expert with r > 1 replicas is written e/r.
  const SlotTable table = p.table();
  std::printf("%5s %12s %7s %12s  %s\n", "rank", "load", "/mean", "before", "experts of its slots");
  for (int r = 0; r < layout.num_ranks; ++r) {
    std::string experts;
    for (int32_t e : table.rank_experts(r)) {
      if (!experts.empty()) experts += ' ';
      experts += std::to_string(e);
      if (table.num_replicas(e) > 1) {
        experts += '/';
        experts += std::to_string(table.num_replicas(e));
      }
    }
    std::printf("%5d %12.1f %7.3f %12.1f  %s\n", r, p.rank_load[r],
                mean > 0 ? p.rank_load[r] / mean : 1.0, p.rank_load_before[r], experts.c_str());
  }
  int replicated = 0;
  for (int e = 0; e < layout.num_experts; ++e) replicated += table.num_replicas(e) > 1;
  std::printf("\n%d expert%s replicated (e/r: one of expert e's r replicas)\n", replicated,
              replicated == 1 ? "" : "s");
  std::printf(
      "imbalance (max / mean rank load): before %.4f (experts contiguous, no replicas), "
      "after %.4f\n",
      p.imbalance_before, p.imbalance);
  for (const std::string& w : p.warnings) std::printf("warning: %s\n", w.c_str());
  std::printf("placement computed in %.1f us\n", us);
  if (!o.out.empty()) {
    std::printf("wrote the placement to %s (moe run --eplb-placement %s)\n", o.out.c_str(),
                o.out.c_str());
  }
  return 0;
}

// ---- bench ----------------------------------------------------------------------------------

struct BenchMethod {
  PlacementMethod method;
  int groups;  // 0: one group per expert
  const char* label;
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int bench(const BenchOptions& o) {
  MOE_CHECK(o.seeds >= 1, "--seeds must be >= 1, got ", o.seeds);
  MOE_CHECK(o.top_k >= 1 && o.tokens >= 1, "--tokens and --top-k must be >= 1");
  const int64_t assignments = o.tokens * o.top_k;
  // DeepSeek-V3 has 8 expert groups; hierarchical is also run with one group per expert.
  const int model_groups = o.experts % 8 == 0 ? 8 : 1;
  const std::vector<BenchMethod> methods = {
      {PlacementMethod::kGreedy, 0, "greedy"},
      {PlacementMethod::kHierarchical, model_groups, "hierarchical"},
      {PlacementMethod::kHierarchical, 0, "hierarchical"}};
  // Hierarchical: 8 GPUs per node (one node at 8 ranks, where it equals greedy, so 2 nodes of
  // 4 GPUs are run there too).
  auto node_choices = [](int ranks) {
    return ranks <= 8 ? std::vector<int>{1, 2} : std::vector<int>{ranks / 8};
  };

  std::vector<std::vector<double>> loads;
  for (int s = 1; s <= o.seeds; ++s) {
    const std::vector<int64_t> c = zipf_expert_load(o.experts, assignments, o.zipf, s);
    loads.emplace_back(c.begin(), c.end());
  }

  std::printf(
      "EPLB placement: Zipf(%g) loads over %d experts, %lld tokens x top-%d = %lld "
      "assignments, %d seeds\n",
      o.zipf, o.experts, static_cast<long long>(o.tokens), o.top_k,
      static_cast<long long>(assignments), o.seeds);
  std::printf(
      "imbalance = max / mean rank load; mean and worst over the seeds; before = experts "
      "contiguous, no replicas\n\n");
  std::printf("%-13s %5s %5s %6s %9s %6s  %8s %8s  %8s %8s  %9s  %s\n", "method", "ranks", "nodes",
              "groups", "redundant", "slots", "before", "(worst)", "after", "(worst)", "time_us",
              "note");

  nlohmann::json cases = nlohmann::json::array();
  for (int ranks : {8, 64}) {
    for (int redundant : {32, 64, 128}) {
      std::vector<std::pair<BenchMethod, int>> runs;  // (method, nodes)
      for (const BenchMethod& m : methods) {
        if (m.method == PlacementMethod::kGreedy) {
          runs.push_back({m, 1});
        } else {
          for (int nodes : node_choices(ranks)) runs.push_back({m, nodes});
        }
      }
      for (const auto& [m, nodes] : runs) {
        const int slots = o.experts + redundant;
        PlacementRequest request{m.method, slots, ranks, nodes, m.groups};
        const int groups_shown =
            m.method == PlacementMethod::kGreedy ? 1 : (m.groups == 0 ? o.experts : m.groups);
        nlohmann::json c = {{"method", m.label},      {"ranks", ranks},         {"nodes", nodes},
                            {"groups", groups_shown}, {"redundant", redundant}, {"slots", slots}};
        std::vector<double> before, after;
        bool duplicates = false;
        double us = 0;
        try {
          for (const std::vector<double>& load : loads) {
            const Placement p = place_experts(load, request);
            before.push_back(p.imbalance_before);
            after.push_back(p.imbalance);
            duplicates = duplicates || p.duplicate_on_rank;
          }
          us = time_us([&] { place_experts(loads[0], request); });
        } catch (const Error& e) {
          c["skipped"] = e.message();
          cases.push_back(c);
          std::printf("%-13s %5d %5d %6d %9d %6d  skipped: %s\n", m.label, ranks, nodes,
                      groups_shown, redundant, slots, e.message().c_str());
          continue;
        }
        auto mean_of = [](const std::vector<double>& v) {
          return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
        };
        auto max_of = [](const std::vector<double>& v) {
          return *std::max_element(v.begin(), v.end());
        };
        std::string note = duplicates ? "duplicates on a rank" : "";
        const bool target_case = ranks == 8 && redundant == 64;
        if (target_case) {
          const bool met = max_of(after) <= 1.05;
          note += std::string(note.empty() ? "" : "; ") +
                  "target <= 1.05: " + (met ? "met" : "NOT met");
          c["target"] = 1.05;
          c["target_met"] = met;
        }
        c["imbalance_before_mean"] = mean_of(before);
        c["imbalance_before_worst"] = max_of(before);
        c["imbalance_after_mean"] = mean_of(after);
        c["imbalance_after_worst"] = max_of(after);
        c["imbalance_after"] = after;
        c["duplicate_on_rank"] = duplicates;
        c["placement_us"] = us;
        cases.push_back(c);
        std::printf("%-13s %5d %5d %6d %9d %6d  %8.4f %8.4f  %8.4f %8.4f  %9.1f  %s\n", m.label,
                    ranks, nodes, groups_shown, redundant, slots, mean_of(before), max_of(before),
                    mean_of(after), max_of(after), us, note.c_str());
      }
    }
  }

  nlohmann::json result = {
      {"benchmark", "eplb-placement"},
      {"date", utc_now()},
      {"imbalance", "max rank load / mean rank load; before: experts contiguous, no replicas"},
      {"load",
       {{"distribution", "zipf"},
        {"zipf_s", o.zipf},
        {"num_experts", o.experts},
        {"tokens", o.tokens},
        {"top_k", o.top_k},
        {"assignments", assignments},
        {"seeds", o.seeds}}},
      {"nodes", "hierarchical: ranks / 8 (8 GPUs per node), and 2 at 8 ranks; greedy: 1"},
      {"cases", cases}};
  std::ofstream out(o.out);
  MOE_CHECK(out.good(), "cannot open '", o.out,
            "' for writing (run from the repository root, or "
            "pass --out)");
  out << result.dump(2) << "\n";
  out.close();
  MOE_CHECK(out.good(), "writing '", o.out, "' failed");
  std::printf("\nwrote %s\n", o.out.c_str());
  return 0;
}

}  // namespace

Command add_eplb_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "eplb",
      "Expert-parallel load balancing: placement of experts (and replicas of hot\n"
      "experts) onto slots and ranks from a load.");
  cmd->require_subcommand(1);

  auto po = std::make_shared<PlanOptions>();
  CLI::App* plan_cmd = cmd->add_subcommand(
      "plan",
      "Place a load (a statistics file or a synthetic Zipf load) and print each rank's\n"
      "experts and the imbalance (max / mean rank load) before and after.");
  CLI::Option* stats = plan_cmd->add_option(
      "--stats", po->stats,
      "Expert-load file: {\"num_experts\": E, \"window\": [[counts...], ...]}");
  CLI::Option* zipf = plan_cmd->add_option(
      "--zipf", po->zipf, "Synthesise a Zipf(S) load instead (needs --experts and --tokens)");
  stats->excludes(zipf);
  plan_cmd->add_option("--experts", po->experts, "Experts of the Zipf load");
  plan_cmd->add_option("--tokens", po->tokens,
                       "Tokens of the Zipf load (times --top-k: the assignments)");
  plan_cmd->add_option("--top-k", po->top_k, "Experts per token of the Zipf load (default 1)");
  plan_cmd->add_option("--seed", po->seed, "Seed of the Zipf load's expert permutation")
      ->capture_default_str();
  plan_cmd->add_option("--slots", po->slots, "Slots in all (>= experts, divisible by --ranks)")
      ->required();
  plan_cmd->add_option("--ranks", po->ranks, "EP ranks")->required();
  plan_cmd->add_option("--nodes", po->nodes, "Nodes (hierarchical; divides --ranks)")
      ->capture_default_str();
  plan_cmd->add_option("--groups", po->groups,
                       "Expert groups kept within a node (hierarchical; default: one per expert)");
  plan_cmd->add_option("--method", po->method, "hierarchical or greedy")->capture_default_str();
  plan_cmd->add_flag("--json", po->json, "Print the placement as JSON");
  plan_cmd->add_option("--out", po->out,
                       "Write the placement file that `moe run --eplb-placement` reads");

  auto bo = std::make_shared<BenchOptions>();
  CLI::App* bench_cmd = cmd->add_subcommand(
      "bench",
      "Imbalance before/after and time of both placement methods on Zipf loads\n"
      "(8 and 64 ranks, 32/64/128 redundant slots); table + JSON.");
  bench_cmd->add_option("--out", bo->out, "JSON results")->capture_default_str();
  bench_cmd->add_option("--seeds", bo->seeds, "Zipf loads (seeds 1..N)")->capture_default_str();
  bench_cmd->add_option("--experts", bo->experts, "Experts")->capture_default_str();
  bench_cmd->add_option("--tokens", bo->tokens, "Tokens per forward")->capture_default_str();
  bench_cmd->add_option("--top-k", bo->top_k, "Experts per token")->capture_default_str();
  bench_cmd->add_option("--zipf", bo->zipf, "Zipf exponent")->capture_default_str();

  const Subcommand layer = add_eplb_layer_command(*cmd);

  return [cmd, plan_cmd, po, bo, layer] {
    if (cmd->got_subcommand(plan_cmd)) return plan(*po);
    if (cmd->got_subcommand(layer.app)) return layer.run();
    return bench(*bo);
  };
}

}  // namespace moe::cli
