// The pure parts of `moe bench` (bench_math.h): work and floor of a case, statistics,
// options, table rows and the JSON document.
#include "bench/harness/bench_math.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "moe/dtype.h"
#include "moe/errors.h"

namespace moe::bench {

// ---- Work of a case ------------------------------------------------------------------------

double weight_bytes_per_element(QuantMode quant) {
  switch (quant) {
    case QuantMode::kBF16:
    case QuantMode::kFP16:
      return 2.0;
    case QuantMode::kFP8PerTensor:
      return 1.0;
    case QuantMode::kFP8Block:
      return 1.0 + 4.0 / (128.0 * 128.0);
    case QuantMode::kNVFP4:
      return 0.5 + 1.0 / 16.0;
    case QuantMode::kMXFP4:
    case QuantMode::kW4A8MXFP4MXFP8:
      return 0.5 + 1.0 / 32.0;
  }
  MOE_UNREACHABLE("quant mode ", static_cast<int>(quant));
}

std::vector<int> tokens_per_expert(std::span<const int32_t> ids, int num_experts) {
  MOE_CHECK(num_experts > 0, "tokens_per_expert: num_experts must be > 0, got ", num_experts);
  std::vector<int> count(num_experts, 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    MOE_CHECK(ids[i] >= 0 && ids[i] < num_experts, "tokens_per_expert: id ", ids[i],
              " at position ", i, " is outside [0, ", num_experts, ")");
    ++count[ids[i]];
  }
  return count;
}

int count_active(std::span<const int> tokens_per_expert) {
  return static_cast<int>(
      std::count_if(tokens_per_expert.begin(), tokens_per_expert.end(), [](int n) { return n; }));
}

int count_distinct_experts(std::span<const int32_t> ids, int num_experts) {
  return count_active(tokens_per_expert(ids, num_experts));
}

double case_bytes(const MoeConfig& c, int64_t tokens, double distinct_experts) {
  const double w = weight_bytes_per_element(c.quant);
  const double a = static_cast<double>(dtype_bits(c.act_dtype)) / 8.0;
  const double h = c.hidden_size;
  const double routed = distinct_experts * 3.0 * h * c.intermediate_size * w;
  const double shared = c.num_shared_experts > 0 ? 3.0 * h * c.shared_intermediate_size * w : 0.0;
  return routed + shared + 2.0 * static_cast<double>(tokens) * h * a;
}

double case_flops(const MoeConfig& c, int64_t tokens) {
  const double t = static_cast<double>(tokens), h = c.hidden_size;
  const double shared = c.num_shared_experts > 0 ? c.shared_intermediate_size : 0;
  return 2.0 * t * c.top_k * 3.0 * h * c.intermediate_size + 2.0 * t * 3.0 * h * shared;
}

double model_weight_bytes(const MoeConfig& c) {
  const double w = weight_bytes_per_element(c.quant);
  const double h = c.hidden_size, e = c.num_experts;
  double bytes = e * 3.0 * h * c.intermediate_size * w;
  if (c.num_shared_experts > 0) bytes += 3.0 * h * c.shared_intermediate_size * w;
  if (c.has_expert_biases) bytes += e * (2.0 * c.intermediate_size + h) * 4.0;
  bytes += e * h * 4.0;  // router weight (f32 at most)
  return bytes;
}

Floor case_floor(double bytes, double flops, const Roofline& r) {
  MOE_CHECK(r.copy_bytes_per_s > 0 && r.gemm_flops_per_s > 0,
            "case_floor: the roofline needs positive rates, got copy ", r.copy_bytes_per_s,
            " B/s and GEMM ", r.gemm_flops_per_s, " FLOP/s");
  return Floor{bytes / r.copy_bytes_per_s, flops / r.gemm_flops_per_s};
}

// ---- Timing statistics ---------------------------------------------------------------------

namespace {

// Quantile q in [0, 1] of sorted values, interpolating linearly between ranks.
double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

TimingStats summarize_times(std::vector<double> ms) {
  MOE_CHECK(!ms.empty(), "summarize_times: no times");
  for (size_t i = 0; i < ms.size(); ++i) {
    MOE_CHECK(std::isfinite(ms[i]) && ms[i] >= 0, "summarize_times: time ", i, " is ", ms[i]);
  }
  std::sort(ms.begin(), ms.end());
  TimingStats s;
  s.count = static_cast<int>(ms.size());
  s.median_ms = quantile(ms, 0.5);
  double sum = 0;
  for (double v : ms) sum += v;
  s.mean_ms = sum / static_cast<double>(ms.size());
  s.min_ms = ms.front();
  s.max_ms = ms.back();
  s.p10_ms = quantile(ms, 0.1);
  s.p90_ms = quantile(ms, 0.9);
  return s;
}

double geometric_mean(std::span<const double> values) {
  MOE_CHECK(!values.empty(), "geometric_mean: no values");
  double log_sum = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    MOE_CHECK(values[i] > 0 && std::isfinite(values[i]), "geometric_mean: value ", i, " is ",
              values[i], " (must be finite and > 0)");
    log_sum += std::log(values[i]);
  }
  return std::exp(log_sum / static_cast<double>(values.size()));
}

int num_input_sets(size_t bytes_per_set, size_t l2_bytes, int max_sets) {
  MOE_CHECK(max_sets >= 1, "num_input_sets: max_sets must be >= 1, got ", max_sets);
  size_t needed = bytes_per_set == 0 ? static_cast<size_t>(max_sets)
                                     : (2 * l2_bytes) / bytes_per_set + 1;  // total > 2 x L2
  needed = std::max<size_t>(needed, 2);
  return static_cast<int>(std::min<size_t>(needed, static_cast<size_t>(max_sets)));
}

// ---- Options -------------------------------------------------------------------------------

std::vector<int64_t> default_token_counts(std::string_view model) {
  std::vector<int64_t> tokens = {1, 8, 64, 512, 4096};
  if (model == "qwen3-30b-a3b") tokens.push_back(16384);
  return tokens;
}

std::vector<std::string> split_list(std::string_view list) {
  std::vector<std::string> items;
  size_t begin = 0;
  while (begin <= list.size()) {
    size_t end = list.find(',', begin);
    if (end == std::string_view::npos) end = list.size();
    std::string_view item = list.substr(begin, end - begin);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) {
      item.remove_prefix(1);
    }
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) {
      item.remove_suffix(1);
    }
    if (!item.empty()) items.emplace_back(item);
    begin = end + 1;
  }
  return items;
}

std::vector<int64_t> parse_token_list(std::string_view list) {
  std::vector<int64_t> tokens;
  for (const std::string& item : split_list(list)) {
    int64_t value = 0;
    const auto [end, err] = std::from_chars(item.data(), item.data() + item.size(), value);
    MOE_CHECK(err == std::errc() && end == item.data() + item.size() && value > 0, "--tokens: '",
              item, "' is not a positive integer (in '", list, "')");
    if (std::find(tokens.begin(), tokens.end(), value) == tokens.end()) tokens.push_back(value);
  }
  MOE_CHECK(!tokens.empty(), "--tokens: no token count in '", list, "'");
  return tokens;
}

std::string sanitize_name(std::string_view name) {
  std::string out;
  for (char ch : name) {
    const auto u = static_cast<unsigned char>(ch);
    if (std::isalnum(u)) {
      out += static_cast<char>(std::tolower(u));
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? "device" : out;
}

std::string utc_date(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

std::string utc_timestamp(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string default_output_path(std::string_view device_name, std::string_view date) {
  return "bench/results/" + sanitize_name(device_name) + "-" + std::string(date) + ".json";
}

// ---- Results -------------------------------------------------------------------------------

double CaseResult::tflops() const { return flops / (ours.median_ms * 1e-3) / 1e12; }
double CaseResult::gbps() const { return bytes / (ours.median_ms * 1e-3) / 1e9; }
double CaseResult::time_over_floor() const { return ours.median_ms * 1e-3 / floor.seconds(); }
std::optional<double> CaseResult::peer_over_ours() const {
  if (!peer) return std::nullopt;
  return peer->median_ms / ours.median_ms;
}

Summary summarize_cases(std::span<const CaseResult> cases) {
  MOE_CHECK(!cases.empty(), "summarize_cases: no cases");
  Summary s;
  std::vector<double> ratios, peer_ratios;
  for (const CaseResult& c : cases) {
    const double r = c.time_over_floor();
    ratios.push_back(r);
    if (r > s.worst_time_over_floor) {
      s.worst_time_over_floor = r;
      s.worst_case = c.model + " T=" + std::to_string(c.tokens);
    }
    if (const auto p = c.peer_over_ours()) peer_ratios.push_back(*p);
  }
  s.num_cases = static_cast<int>(cases.size());
  s.geomean_time_over_floor = geometric_mean(ratios);
  s.num_peer_cases = static_cast<int>(peer_ratios.size());
  if (!peer_ratios.empty()) s.geomean_peer_over_ours = geometric_mean(peer_ratios);
  return s;
}

namespace {

nlohmann::json stats_to_json(const TimingStats& s) {
  return {{"count", s.count},   {"median_ms", s.median_ms}, {"mean_ms", s.mean_ms},
          {"min_ms", s.min_ms}, {"max_ms", s.max_ms},       {"p10_ms", s.p10_ms},
          {"p90_ms", s.p90_ms}, {"spread", s.spread()}};
}

}  // namespace

nlohmann::json case_to_json(const CaseResult& c) {
  nlohmann::json j;
  j["model"] = c.model;
  j["tokens"] = c.tokens;
  j["ms"] = c.ours.median_ms;
  j["tflops"] = c.tflops();
  j["gbps"] = c.gbps();
  j["floor_ms"] = c.floor.seconds() * 1e3;
  j["floor_bound"] = c.floor.memory_bound() ? "memory" : "compute";
  j["memory_floor_ms"] = c.floor.memory_s * 1e3;
  j["compute_floor_ms"] = c.floor.compute_s * 1e3;
  j["time_over_floor"] = c.time_over_floor();
  j["bytes"] = c.bytes;
  j["flops"] = c.flops;
  j["distinct_experts"] = c.distinct_experts;
  j["input_sets"] = c.input_sets;
  j["inputs_exceed_2x_l2"] = c.inputs_exceed_2x_l2;
  j["output_finite"] = c.output_finite;
  j["timing"] = stats_to_json(c.ours);
  if (c.peer) {
    j["peer_ms"] = c.peer->median_ms;
    j["peer_over_ours"] = *c.peer_over_ours();
    j["peer_mode"] = c.peer_mode;
    j["peer_timing"] = stats_to_json(*c.peer);
  } else {
    j["peer_ms"] = nullptr;
    j["peer_over_ours"] = nullptr;
    j["peer_mode"] = nullptr;
    j["peer_timing"] = nullptr;
  }
  return j;
}

nlohmann::json run_to_json(const BenchRun& run) {
  nlohmann::json j;
  j["format"] = "moe-bench/1";
  j["timestamp_utc"] = run.timestamp_utc;
  j["device"] = {{"name", run.device_name},
                 {"sm", std::to_string(run.sm_major) + std::to_string(run.sm_minor)},
                 {"num_sms", run.num_sms},
                 {"memory_bytes", run.memory_bytes},
                 {"l2_bytes", run.l2_bytes},
                 {"cuda_runtime_version", run.cuda_runtime_version},
                 {"cublas_version", run.cublas_version}};
  j["settings"] = {{"backend", run.backend}, {"quant", run.quant}, {"warmup", run.warmup},
                   {"reps", run.reps},       {"peer", run.peer},   {"weight_pool", run.weight_pool},
                   {"seed", run.seed}};
  const RooflineReport& r = run.roofline;
  j["roofline"] = {{"copy_gbps", r.rates.copy_bytes_per_s / 1e9},
                   {"copy_buffer_bytes", r.copy_buffer_bytes},
                   {"copy_timing", stats_to_json(r.copy)},
                   {"gemm_tflops", r.rates.gemm_flops_per_s / 1e12},
                   {"gemm_n", r.gemm_n},
                   {"gemm_timing", stats_to_json(r.gemm)}};
  j["loads"] = nlohmann::json::array();
  for (const ModelLoad& l : run.loads) {
    j["loads"].push_back(
        {{"model", l.model}, {"weight_bytes", l.weight_bytes}, {"load_s", l.load_s}});
  }
  j["cases"] = nlohmann::json::array();
  for (const CaseResult& c : run.cases) j["cases"].push_back(case_to_json(c));
  if (run.cases.empty()) {
    j["summary"] = nullptr;
  } else {
    const Summary s = summarize_cases(run.cases);
    j["summary"] = {{"num_cases", s.num_cases},
                    {"geomean_time_over_floor", s.geomean_time_over_floor},
                    {"worst_time_over_floor", s.worst_time_over_floor},
                    {"worst_case", s.worst_case},
                    {"num_peer_cases", s.num_peer_cases},
                    {"geomean_peer_over_ours",
                     s.num_peer_cases ? nlohmann::json(s.geomean_peer_over_ours) : nullptr}};
  }
  auto notes = [](const std::vector<ModelNote>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const ModelNote& n : v) a.push_back({{"model", n.model}, {"reason", n.reason}});
    return a;
  };
  j["skipped"] = notes(run.skipped);
  j["failed"] = notes(run.failed);
  return j;
}

namespace {

constexpr const char* kRowFormat = "%-18s %6s %9s %8s %8s %9s %10s %9s %9s";

std::string format_row(const char* model, const char* t, const char* ms, const char* tflops,
                       const char* gbps, const char* floor_ms, const char* ratio,
                       const char* peer_ms, const char* peer_ratio) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), kRowFormat, model, t, ms, tflops, gbps, floor_ms, ratio, peer_ms,
                peer_ratio);
  return buf;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

}  // namespace

std::string table_header() {
  return format_row("model", "T", "ms", "TFLOP/s", "GB/s", "floor ms", "time/floor", "peer ms",
                    "peer/ours");
}

std::string table_row(const CaseResult& c) {
  const auto peer = c.peer_over_ours();
  return format_row(
      c.model.c_str(), std::to_string(c.tokens).c_str(), fixed(c.ours.median_ms, 4).c_str(),
      fixed(c.tflops(), 1).c_str(), fixed(c.gbps(), 0).c_str(),
      fixed(c.floor.seconds() * 1e3, 4).c_str(), fixed(c.time_over_floor(), 2).c_str(),
      c.peer ? fixed(c.peer->median_ms, 4).c_str() : "-", peer ? fixed(*peer, 2).c_str() : "-");
}

}  // namespace moe::bench
