// The pure parts of `moe bench` (bench_math.h): work and floor of a case, statistics,
// options, table rows and the JSON document.
#include "bench/harness/bench_math.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <utility>

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

namespace {

double ceil_div(double a, double b) { return std::ceil(a / b); }

}  // namespace

double weight_matrix_bytes(QuantMode quant, int64_t rows, int64_t cols) {
  MOE_CHECK(rows > 0 && cols > 0, "weight_matrix_bytes: matrix [", rows, ", ", cols,
            "] must have positive sizes");
  const double r = static_cast<double>(rows), k = static_cast<double>(cols);
  constexpr double kF32 = 4;
  switch (quant) {
    case QuantMode::kBF16:
    case QuantMode::kFP16:
      return 2 * r * k;
    case QuantMode::kFP8PerTensor:
      return r * k + kF32;
    case QuantMode::kFP8Block:
      return r * k + ceil_div(r, 128) * ceil_div(k, 128) * kF32;
    case QuantMode::kNVFP4:
      return ceil_div(r * k, 2) + r * ceil_div(k, 16) + kF32;
    case QuantMode::kMXFP4:
    case QuantMode::kW4A8MXFP4MXFP8:
      return ceil_div(r * k, 2) + r * ceil_div(k, 32);
  }
  MOE_UNREACHABLE("quant mode ", static_cast<int>(quant));
}

double expert_weight_bytes(QuantMode quant, int64_t hidden, int64_t intermediate) {
  return 2 * weight_matrix_bytes(quant, intermediate, hidden) +
         weight_matrix_bytes(quant, hidden, intermediate);
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
  const double a = static_cast<double>(dtype_bits(c.act_dtype)) / 8.0;
  const double h = c.hidden_size;
  const double routed =
      distinct_experts * expert_weight_bytes(c.quant, c.hidden_size, c.intermediate_size);
  const double shared = c.num_shared_experts > 0 ? expert_weight_bytes(c.quant, c.hidden_size,
                                                                       c.shared_intermediate_size)
                                                 : 0.0;
  return routed + shared + 2.0 * static_cast<double>(tokens) * h * a;
}

double case_flops(const MoeConfig& c, int64_t tokens) {
  const double t = static_cast<double>(tokens), h = c.hidden_size;
  const double shared = c.num_shared_experts > 0 ? c.shared_intermediate_size : 0;
  return 2.0 * t * c.top_k * 3.0 * h * c.intermediate_size + 2.0 * t * 3.0 * h * shared;
}

double model_weight_bytes(const MoeConfig& c) {
  const double h = c.hidden_size, e = c.num_experts;
  double bytes = e * expert_weight_bytes(c.quant, c.hidden_size, c.intermediate_size);
  if (c.num_shared_experts > 0) {
    bytes += expert_weight_bytes(c.quant, c.hidden_size, c.shared_intermediate_size);
  }
  if (c.has_expert_biases) bytes += e * (2.0 * c.intermediate_size + h) * 4.0;
  bytes += e * h * 4.0;  // router weight (f32 at most)
  return bytes;
}

PeerInfo peer_for_quant(QuantMode quant) {
  switch (quant) {
    case QuantMode::kBF16:
    case QuantMode::kFP16:
      return {std::string(kPeerCublasGrouped),
              "cuBLAS grouped GEMM (cublasGemmGroupedBatchedEx; FC1 + FC2 only)"};
    case QuantMode::kFP8Block:
      return {std::string(kPeerCublasLt),
              "cuBLASLt e4m3 matmul per expert (128x128 weight and 1x128 activation scales; FC1 "
              "+ FC2 only)"};
    case QuantMode::kFP8PerTensor:
      return {std::string(kPeerCublasLt),
              "cuBLASLt e4m3 matmul per expert (per-tensor scales; FC1 + FC2 only)"};
    case QuantMode::kNVFP4:
    case QuantMode::kMXFP4:
    case QuantMode::kW4A8MXFP4MXFP8:
      return {"", "no cuBLAS peer for " + std::string(quant_mode_name(quant)) +
                      " weights (cuBLAS has no fp4 weight format on Hopper)"};
  }
  MOE_UNREACHABLE("quant mode ", static_cast<int>(quant));
}

GemmFormat gemm_format(QuantMode quant) {
  switch (quant) {
    case QuantMode::kBF16:
    case QuantMode::kFP16:
    case QuantMode::kNVFP4:
    case QuantMode::kMXFP4:
      return GemmFormat::kBF16;
    case QuantMode::kFP8PerTensor:
    case QuantMode::kFP8Block:
    case QuantMode::kW4A8MXFP4MXFP8:
      return GemmFormat::kFP8;
  }
  MOE_UNREACHABLE("quant mode ", static_cast<int>(quant));
}

std::string_view gemm_format_name(GemmFormat format) {
  return format == GemmFormat::kFP8 ? "fp8" : "bf16";
}

double gemm_rate(const Roofline& r, GemmFormat format) {
  const double rate = format == GemmFormat::kFP8 ? r.fp8_gemm_flops_per_s : r.gemm_flops_per_s;
  MOE_CHECK(rate > 0, "the roofline's ", gemm_format_name(format), " GEMM rate is ", rate,
            " FLOP/s: ", format == GemmFormat::kFP8 ? "not measured in this run" : "not positive");
  return rate;
}

Floor case_floor(double bytes, double flops, const Roofline& r, GemmFormat format) {
  MOE_CHECK(r.copy_bytes_per_s > 0,
            "case_floor: the roofline needs a positive copy bandwidth, got ", r.copy_bytes_per_s,
            " B/s");
  return Floor{bytes / r.copy_bytes_per_s, flops / gemm_rate(r, format)};
}

Floor case_floor(const MoeConfig& c, int64_t tokens, double distinct_experts, const Roofline& r) {
  return case_floor(case_bytes(c, tokens, distinct_experts), case_flops(c, tokens), r,
                    gemm_format(c.quant));
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

const char* l2_flush_mode_name(L2FlushMode mode) {
  switch (mode) {
    case L2FlushMode::kClean:
      return "clean";
    case L2FlushMode::kDirty:
      return "dirty";
    case L2FlushMode::kNone:
      return "none";
  }
  MOE_UNREACHABLE("L2FlushMode ", static_cast<int>(mode));
}

L2FlushMode parse_l2_flush_mode(std::string_view name) {
  if (name == "clean") return L2FlushMode::kClean;
  if (name == "dirty") return L2FlushMode::kDirty;
  if (name == "none") return L2FlushMode::kNone;
  MOE_THROW("--l2-flush: unknown flush '", name, "' (clean, dirty or none)");
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

std::vector<std::string> parse_backend_list(std::string_view list,
                                            std::span<const std::string> known) {
  std::string names;
  for (const std::string& k : known) names += (names.empty() ? "" : ", ") + k;
  std::vector<std::string> backends;
  for (const std::string& item : split_list(list)) {
    MOE_CHECK(item == "auto" || std::find(known.begin(), known.end(), item) != known.end(),
              "--backend: unknown backend '", item, "' (in '", list, "'; built: ", names,
              ", or auto)");
    if (std::find(backends.begin(), backends.end(), item) == backends.end()) {
      backends.push_back(item);
    }
  }
  MOE_CHECK(!backends.empty(), "--backend: no backend in '", list, "'");
  MOE_CHECK(
      backends.size() == 1 || std::find(backends.begin(), backends.end(), "auto") == backends.end(),
      "--backend: 'auto' cannot be compared with others (in '", list,
      "'): it picks one backend per layer; list the backends by name, and the table "
      "shows auto's pick per case");
  return backends;
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
std::optional<double> CaseResult::fp8_speedup() const {
  if (!bf16) return std::nullopt;
  return bf16->median_ms / ours.median_ms;
}
std::optional<double> CaseResult::bf16_time_over_floor() const {
  if (!bf16) return std::nullopt;
  return bf16->median_ms * 1e-3 / bf16_floor.seconds();
}

void attach_bf16(std::span<CaseResult> fp8_rows, std::span<const CaseResult> bf16_rows) {
  for (CaseResult& r : fp8_rows) {
    const CaseResult* match = nullptr;
    for (const CaseResult& b : bf16_rows) {
      if (b.model != r.model || b.tokens != r.tokens) continue;
      MOE_CHECK(match == nullptr, "attach_bf16: two bf16 rows of ", r.model, " T=", r.tokens);
      MOE_CHECK(b.backend == r.backend, "attach_bf16: the bf16 row of ", r.model, " T=", r.tokens,
                " ran on ", b.backend, ", its fp8 row on ", r.backend);
      match = &b;
    }
    if (match == nullptr) continue;
    r.bf16 = match->ours;
    r.bf16_floor = match->floor;
    r.bf16_output_finite = match->output_finite;
  }
}

Summary summarize_cases(std::span<const CaseResult> cases) {
  MOE_CHECK(!cases.empty(), "summarize_cases: no cases");
  Summary s;
  std::vector<double> ratios, peer_ratios, speedups;
  for (const CaseResult& c : cases) {
    const double r = c.time_over_floor();
    ratios.push_back(r);
    if (r > s.worst_time_over_floor) {
      s.worst_time_over_floor = r;
      s.worst_case = c.model + " T=" + std::to_string(c.tokens);
    }
    if (const auto p = c.peer_over_ours()) peer_ratios.push_back(*p);
    if (const auto f = c.fp8_speedup()) {
      if (speedups.empty() || *f < s.min_fp8_speedup) {
        s.min_fp8_speedup = *f;
        s.min_fp8_speedup_case = c.model + " T=" + std::to_string(c.tokens);
      }
      speedups.push_back(*f);
    }
  }
  s.num_cases = static_cast<int>(cases.size());
  s.geomean_time_over_floor = geometric_mean(ratios);
  s.num_peer_cases = static_cast<int>(peer_ratios.size());
  if (!peer_ratios.empty()) s.geomean_peer_over_ours = geometric_mean(peer_ratios);
  s.num_fp8_speedup_cases = static_cast<int>(speedups.size());
  if (!speedups.empty()) s.geomean_fp8_speedup = geometric_mean(speedups);
  return s;
}

// ---- Several backends in one run -----------------------------------------------------------

std::optional<double> ComparedCase::vs_first(size_t b) const {
  if (b >= ms.size() || !ms[b] || !ms[0]) return std::nullopt;
  return *ms[b] / *ms[0];
}

std::optional<double> ComparedCase::auto_over_fastest() const {
  if (fastest < 0 || auto_index < 0) return std::nullopt;
  return *ms[auto_index] / *ms[fastest];
}

namespace {

// The rows of `cases` grouped per (model, T), with the fastest backend and auto's place.
std::vector<ComparedCase> group_cases(std::span<const CaseResult> cases,
                                      std::span<const std::string> backends) {
  const size_t nb = backends.size();
  std::vector<ComparedCase> out;
  for (size_t i = 0; i < cases.size(); ++i) {
    const CaseResult& r = cases[i];
    const auto b_it = std::find(backends.begin(), backends.end(), r.backend);
    MOE_CHECK(b_it != backends.end(), "compare_backends: row ", i, " (", r.model, " T=", r.tokens,
              ") is of backend '", r.backend, "', which is not listed");
    const size_t b = static_cast<size_t>(b_it - backends.begin());
    const CaseKey key{r.model, r.tokens};
    auto k =
        std::find_if(out.begin(), out.end(), [&](const ComparedCase& x) { return x.key == key; });
    if (k == out.end()) {
      ComparedCase added;
      added.key = key;
      added.rows.resize(nb);
      added.ms.resize(nb);
      added.time_over_floor.resize(nb);
      added.fp8_speedup.resize(nb);
      out.push_back(std::move(added));
      k = out.end() - 1;
    }
    MOE_CHECK(!k->rows[b], "compare_backends: backend '", r.backend, "' has two rows of ", r.model,
              " T=", r.tokens, " (rows ", *k->rows[b], " and ", i, ")");
    k->rows[b] = i;
    k->ms[b] = r.ours.median_ms;
    k->time_over_floor[b] = r.time_over_floor();
    k->fp8_speedup[b] = r.fp8_speedup();
    if (k->auto_choice.empty()) k->auto_choice = r.auto_choice;
  }
  for (ComparedCase& k : out) {
    int ran = 0;
    for (size_t b = 0; b < nb; ++b) {
      if (!k.ms[b]) continue;
      ++ran;
      if (k.fastest < 0 || *k.ms[b] < *k.ms[k.fastest]) k.fastest = static_cast<int>(b);
      if (backends[b] == k.auto_choice) k.auto_index = static_cast<int>(b);
    }
    if (ran < 2) k.fastest = -1;
  }
  return out;
}

}  // namespace

Comparison compare_backends(std::span<const CaseResult> cases,
                            std::span<const std::string> backends) {
  MOE_CHECK(!backends.empty(), "compare_backends: no backend listed");
  Comparison cmp;
  cmp.backends.assign(backends.begin(), backends.end());
  cmp.cases = group_cases(cases, backends);

  AutoSummary& a = cmp.autos;
  std::vector<double> auto_ratios;
  for (const ComparedCase& k : cmp.cases) {
    const auto r = k.auto_over_fastest();
    if (!r) continue;
    ++a.num_cases;
    auto_ratios.push_back(*r);
    a.worst_over_fastest = std::max(a.worst_over_fastest, *r);
    // NOTE: a tie counts as a hit: auto's pick was as fast as the fastest.
    if (*r <= 1.0) {
      ++a.num_fastest;
    } else {
      a.misses.push_back({k.key, backends[k.auto_index], backends[k.fastest], *r});
    }
  }
  if (!auto_ratios.empty()) a.geomean_over_fastest = geometric_mean(auto_ratios);

  for (size_t b = 0; b < backends.size(); ++b) {
    BackendSummary s;
    s.backend = backends[b];
    std::vector<CaseResult> ran, picked;
    std::vector<double> vs_first;
    for (const ComparedCase& k : cmp.cases) {
      if (!k.rows[b]) continue;
      ran.push_back(cases[*k.rows[b]]);
      if (k.auto_index == static_cast<int>(b)) picked.push_back(cases[*k.rows[b]]);
      if (const auto v = k.vs_first(b)) vs_first.push_back(*v);
      if (k.fastest == static_cast<int>(b)) s.fastest.push_back(k.key);
    }
    if (!ran.empty()) s.all = summarize_cases(ran);
    if (!picked.empty()) s.auto_picked = summarize_cases(picked);
    s.num_vs_first = static_cast<int>(vs_first.size());
    if (!vs_first.empty()) s.geomean_vs_first = geometric_mean(vs_first);
    cmp.per_backend.push_back(std::move(s));
  }
  return cmp;
}

std::string format_case_list(std::span<const CaseKey> cases) {
  if (cases.empty()) return "-";
  std::vector<std::pair<std::string, std::string>> groups;  // model, "T=1,2"
  for (const CaseKey& k : cases) {
    auto g = std::find_if(groups.begin(), groups.end(),
                          [&](const auto& x) { return x.first == k.model; });
    if (g == groups.end()) {
      groups.emplace_back(k.model, "T=" + std::to_string(k.tokens));
    } else {
      g->second += ',';
      g->second += std::to_string(k.tokens);
    }
  }
  std::string out;
  for (const auto& [model, tokens] : groups) {
    out += (out.empty() ? "" : "; ") + model + " " + tokens;
  }
  return out;
}

// ---- Output --------------------------------------------------------------------------------

namespace {

nlohmann::json stats_to_json(const TimingStats& s) {
  return {{"count", s.count},   {"median_ms", s.median_ms}, {"mean_ms", s.mean_ms},
          {"min_ms", s.min_ms}, {"max_ms", s.max_ms},       {"p10_ms", s.p10_ms},
          {"p90_ms", s.p90_ms}, {"spread", s.spread()}};
}

nlohmann::json optional_json(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

// The string, or null when it is empty.
nlohmann::json name_or_null(const std::string& s) {
  return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
}

nlohmann::json summary_to_json(const std::optional<Summary>& s) {
  if (!s) return nullptr;
  return {
      {"num_cases", s->num_cases},
      {"geomean_time_over_floor", s->geomean_time_over_floor},
      {"worst_time_over_floor", s->worst_time_over_floor},
      {"worst_case", s->worst_case},
      {"num_peer_cases", s->num_peer_cases},
      {"geomean_peer_over_ours",
       s->num_peer_cases ? nlohmann::json(s->geomean_peer_over_ours) : nullptr},
      {"num_fp8_speedup_cases", s->num_fp8_speedup_cases},
      {"geomean_fp8_speedup",
       s->num_fp8_speedup_cases ? nlohmann::json(s->geomean_fp8_speedup) : nullptr},
      {"min_fp8_speedup", s->num_fp8_speedup_cases ? nlohmann::json(s->min_fp8_speedup) : nullptr},
      {"min_fp8_speedup_case", name_or_null(s->min_fp8_speedup_case)}};
}

nlohmann::json keys_to_json(std::span<const CaseKey> keys) {
  nlohmann::json a = nlohmann::json::array();
  for (const CaseKey& k : keys) a.push_back({{"model", k.model}, {"tokens", k.tokens}});
  return a;
}

}  // namespace

nlohmann::json case_to_json(const CaseResult& c) {
  nlohmann::json j;
  j["model"] = c.model;
  j["tokens"] = c.tokens;
  j["backend"] = c.backend;
  j["auto_choice"] = name_or_null(c.auto_choice);
  j["auto_reason"] = name_or_null(c.auto_reason);
  j["ms"] = c.ours.median_ms;
  j["tflops"] = c.tflops();
  j["gbps"] = c.gbps();
  j["floor_ms"] = c.floor.seconds() * 1e3;
  j["floor_bound"] = c.floor.memory_bound() ? "memory" : "compute";
  j["floor_gemm"] = gemm_format_name(c.floor_gemm);
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
  j["bf16_ms"] = c.bf16 ? nlohmann::json(c.bf16->median_ms) : nullptr;
  j["fp8_speedup"] = optional_json(c.fp8_speedup());
  j["bf16_floor_ms"] = c.bf16 ? nlohmann::json(c.bf16_floor.seconds() * 1e3) : nullptr;
  j["bf16_time_over_floor"] = optional_json(c.bf16_time_over_floor());
  j["bf16_output_finite"] = c.bf16 ? nlohmann::json(c.bf16_output_finite) : nullptr;
  j["bf16_timing"] = c.bf16 ? stats_to_json(*c.bf16) : nullptr;
  return j;
}

nlohmann::json comparison_to_json(const Comparison& c) {
  nlohmann::json j;
  j["backends"] = c.backends;
  j["ratios_relative_to"] = name_or_null(c.backends.empty() ? std::string() : c.backends[0]);
  j["cases"] = nlohmann::json::array();
  for (const ComparedCase& k : c.cases) {
    nlohmann::json ms = nlohmann::json::object(), vs = nlohmann::json::object(),
                   tof = nlohmann::json::object(), speedup = nlohmann::json::object();
    for (size_t b = 0; b < c.backends.size(); ++b) {
      ms[c.backends[b]] = optional_json(k.ms[b]);
      vs[c.backends[b]] = optional_json(k.vs_first(b));
      tof[c.backends[b]] = optional_json(k.time_over_floor[b]);
      speedup[c.backends[b]] = optional_json(k.fp8_speedup[b]);
    }
    const auto auto_ratio = k.auto_over_fastest();
    j["cases"].push_back(
        {{"model", k.key.model},
         {"tokens", k.key.tokens},
         {"ms", ms},
         {"vs_first", vs},
         {"time_over_floor", tof},
         {"fp8_speedup", speedup},
         {"fastest", name_or_null(k.fastest >= 0 ? c.backends[k.fastest] : std::string())},
         {"auto_choice", name_or_null(k.auto_choice)},
         {"auto_is_fastest",
          auto_ratio ? nlohmann::json(*auto_ratio <= 1.0) : nlohmann::json(nullptr)},
         {"auto_over_fastest", optional_json(auto_ratio)}});
  }
  j["per_backend"] = nlohmann::json::array();
  for (const BackendSummary& s : c.per_backend) {
    j["per_backend"].push_back(
        {{"backend", s.backend},
         {"summary", summary_to_json(s.all)},
         {"num_vs_first", s.num_vs_first},
         {"geomean_vs_first", s.num_vs_first ? nlohmann::json(s.geomean_vs_first) : nullptr},
         {"num_fastest", s.fastest.size()},
         {"fastest_cases", keys_to_json(s.fastest)},
         {"where_auto_picks_it", summary_to_json(s.auto_picked)}});
  }
  const AutoSummary& a = c.autos;
  nlohmann::json misses = nlohmann::json::array();
  for (const AutoMiss& m : a.misses) {
    misses.push_back({{"model", m.key.model},
                      {"tokens", m.key.tokens},
                      {"picked", m.picked},
                      {"fastest", m.fastest},
                      {"picked_over_fastest", m.picked_over_fastest}});
  }
  j["auto"] = {
      {"num_cases", a.num_cases},
      {"num_fastest", a.num_fastest},
      {"geomean_over_fastest", a.num_cases ? nlohmann::json(a.geomean_over_fastest) : nullptr},
      {"worst_over_fastest", a.num_cases ? nlohmann::json(a.worst_over_fastest) : nullptr},
      {"misses", misses}};
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
  j["settings"] = {
      {"backend", run.backend},     {"backends", run.backends}, {"quant", run.quant},
      {"warmup", run.warmup},       {"reps", run.reps},         {"peer", run.peer},
      {"peer_name", run.peer_name}, {"vs_bf16", run.vs_bf16},   {"weight_pool", run.weight_pool},
      {"l2_flush", run.l2_flush},   {"seed", run.seed}};
  const RooflineReport& r = run.roofline;
  const bool fp8 = r.fp8_gemm.has_value();
  j["roofline"] = {
      {"copy_gbps", r.rates.copy_bytes_per_s / 1e9},
      {"copy_buffer_bytes", r.copy_buffer_bytes},
      {"copy_timing", stats_to_json(r.copy)},
      {"gemm_tflops", r.rates.gemm_flops_per_s / 1e12},
      {"gemm_n", r.gemm_n},
      {"gemm_timing", stats_to_json(r.gemm)},
      {"fp8_gemm_tflops", fp8 ? nlohmann::json(r.rates.fp8_gemm_flops_per_s / 1e12) : nullptr},
      {"fp8_gemm_n", fp8 ? nlohmann::json(r.fp8_gemm_n) : nullptr},
      {"fp8_gemm_algos", fp8 ? nlohmann::json(r.fp8_gemm_algos) : nullptr},
      {"fp8_gemm_fast_accum", fp8 ? nlohmann::json(r.fp8_gemm_fast_accum) : nullptr},
      {"fp8_gemm_timing", fp8 ? stats_to_json(*r.fp8_gemm) : nullptr}};
  j["loads"] = nlohmann::json::array();
  for (const ModelLoad& l : run.loads) {
    j["loads"].push_back({{"model", l.model},
                          {"backend", l.backend},
                          {"quant", name_or_null(l.quant)},
                          {"weight_bytes", l.weight_bytes},
                          {"load_s", l.load_s}});
  }
  j["cases"] = nlohmann::json::array();
  for (const CaseResult& c : run.cases) j["cases"].push_back(case_to_json(c));
  // NOTE: over every row; in a comparison run per_backend in "comparison" splits it.
  j["summary"] =
      run.cases.empty() ? nlohmann::json(nullptr) : summary_to_json(summarize_cases(run.cases));
  j["comparison"] = run.backends.size() > 1 && !run.cases.empty()
                        ? comparison_to_json(compare_backends(run.cases, run.backends))
                        : nlohmann::json(nullptr);
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
constexpr const char* kSpeedupTitle = "fp8 speedup";
constexpr int kSpeedupWidth = 11;  // the title's width

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

// The "fp8 speedup" cell, right-aligned under its title.
std::string speedup_cell(const std::string& text) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), " %*s", kSpeedupWidth, text.c_str());
  return buf;
}

std::string speedup_text(const CaseResult& c) {
  const auto f = c.fp8_speedup();
  return f ? fixed(*f, 2) : "-";
}

}  // namespace

std::string table_header(bool fp8_speedup) {
  return format_row("model", "T", "ms", "TFLOP/s", "GB/s", "floor ms", "time/floor", "peer ms",
                    "peer/ours") +
         (fp8_speedup ? speedup_cell(kSpeedupTitle) : "");
}

std::string table_row(const CaseResult& c, bool fp8_speedup) {
  const auto peer = c.peer_over_ours();
  return format_row(c.model.c_str(), std::to_string(c.tokens).c_str(),
                    fixed(c.ours.median_ms, 4).c_str(), fixed(c.tflops(), 1).c_str(),
                    fixed(c.gbps(), 0).c_str(), fixed(c.floor.seconds() * 1e3, 4).c_str(),
                    fixed(c.time_over_floor(), 2).c_str(),
                    c.peer ? fixed(c.peer->median_ms, 4).c_str() : "-",
                    peer ? fixed(*peer, 2).c_str() : "-") +
         (fp8_speedup ? speedup_cell(speedup_text(c)) : "");
}

namespace {

// model, T, backend, ms, TFLOP/s, GB/s, floor ms, time/floor, vs <first>, peer ms, peer/ours,
// [fp8 speedup,] note; the "vs" column as wide as its title. `speedup`: empty for no column.
std::string format_compare_row(const std::vector<std::string>& cells, int vs_width,
                               const std::optional<std::string>& speedup) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%-18s %6s %-9s %9s %8s %8s %9s %10s %*s %9s %9s%s  %s",
                cells[0].c_str(), cells[1].c_str(), cells[2].c_str(), cells[3].c_str(),
                cells[4].c_str(), cells[5].c_str(), cells[6].c_str(), cells[7].c_str(), vs_width,
                cells[8].c_str(), cells[9].c_str(), cells[10].c_str(),
                speedup ? speedup_cell(*speedup).c_str() : "", cells[11].c_str());
  std::string row = buf;
  while (!row.empty() && row.back() == ' ') row.pop_back();
  return row;
}

std::string vs_title(std::span<const std::string> backends) {
  return "vs " + (backends.empty() ? std::string("first") : backends[0]);
}

int vs_width(std::span<const std::string> backends) {
  return std::max(9, static_cast<int>(vs_title(backends).size()));
}

template <class... Args>
std::string strprintf(const char* fmt, Args... args) {
  char buf[1024];
  std::snprintf(buf, sizeof(buf), fmt, args...);
  return buf;
}

}  // namespace

std::string comparison_header(std::span<const std::string> backends, bool fp8_speedup) {
  return format_compare_row({"model", "T", "backend", "ms", "TFLOP/s", "GB/s", "floor ms",
                             "time/floor", vs_title(backends), "peer ms", "peer/ours", "note"},
                            vs_width(backends),
                            fp8_speedup ? std::optional<std::string>(kSpeedupTitle) : std::nullopt);
}

std::vector<std::string> comparison_rows(const ComparedCase& k, std::span<const CaseResult> cases,
                                         std::span<const std::string> backends, bool fp8_speedup) {
  MOE_CHECK(k.rows.size() == backends.size(), "comparison_rows: ", k.rows.size(), " rows for ",
            backends.size(), " backends");
  std::vector<std::string> rows;
  for (size_t b = 0; b < backends.size(); ++b) {
    if (!k.rows[b]) continue;
    MOE_CHECK(*k.rows[b] < cases.size(), "comparison_rows: row ", *k.rows[b], " of ", cases.size());
    const CaseResult& c = cases[*k.rows[b]];
    const auto peer = c.peer_over_ours();
    const auto vs = k.vs_first(b);
    std::string note;
    if (k.fastest == static_cast<int>(b)) note = "fastest";
    if (k.auto_index == static_cast<int>(b)) note += note.empty() ? "auto" : ", auto";
    if (rows.empty() && k.auto_index < 0 && !k.auto_choice.empty()) {
      note += (note.empty() ? "" : ", ") + std::string("auto: ") + k.auto_choice + " (not timed)";
    }
    if (!c.output_finite) note += (note.empty() ? "" : ", ") + std::string("output not finite!");
    if (c.bf16 && !c.bf16_output_finite) {
      note += (note.empty() ? "" : ", ") + std::string("bf16 output not finite!");
    }
    rows.push_back(format_compare_row(
        {c.model, std::to_string(c.tokens), backends[b], fixed(c.ours.median_ms, 4),
         fixed(c.tflops(), 1), fixed(c.gbps(), 0), fixed(c.floor.seconds() * 1e3, 4),
         fixed(c.time_over_floor(), 2), vs ? fixed(*vs, 2) : "-",
         c.peer ? fixed(c.peer->median_ms, 4) : "-", peer ? fixed(*peer, 2) : "-", note},
        vs_width(backends),
        fp8_speedup ? std::optional<std::string>(speedup_text(c)) : std::nullopt));
  }
  return rows;
}

std::vector<std::string> summary_lines(const Summary& s) {
  std::vector<std::string> lines;
  if (s.num_cases > 0) {
    lines.push_back(strprintf("# time/floor over %d cases: geometric mean %.3f, worst %.3f (%s)",
                              s.num_cases, s.geomean_time_over_floor, s.worst_time_over_floor,
                              s.worst_case.c_str()));
  }
  if (s.num_peer_cases > 0) {
    lines.push_back(strprintf("# peer/ours over %d cases: geometric mean %.3f", s.num_peer_cases,
                              s.geomean_peer_over_ours));
  }
  if (s.num_fp8_speedup_cases > 0) {
    lines.push_back(strprintf(
        "# fp8 speedup (bf16 time / fp8 time, same backend) over %d cases: geometric mean "
        "%.3f, lowest %.3f (%s)",
        s.num_fp8_speedup_cases, s.geomean_fp8_speedup, s.min_fp8_speedup,
        s.min_fp8_speedup_case.c_str()));
  }
  return lines;
}

std::vector<std::string> comparison_summary_lines(const Comparison& c) {
  std::vector<std::string> lines;
  if (c.backends.empty()) return lines;
  const std::string& first = c.backends[0];
  int name_width = 0;
  for (const std::string& b : c.backends)
    name_width = std::max(name_width, static_cast<int>(b.size()));
  const int num_compared = static_cast<int>(std::count_if(
      c.cases.begin(), c.cases.end(), [](const ComparedCase& k) { return k.fastest >= 0; }));

  lines.push_back("# per backend: time/floor over the cases it ran; vs " + first + ": its time / " +
                  first + "'s, geometric mean over the cases both ran");
  for (const BackendSummary& s : c.per_backend) {
    if (!s.all) {
      lines.push_back(strprintf("#   %-*s no case ran", name_width, s.backend.c_str()));
      continue;
    }
    std::string line =
        strprintf("#   %-*s %3d cases: time/floor geometric mean %.3f, worst %.3f (%s)", name_width,
                  s.backend.c_str(), s.all->num_cases, s.all->geomean_time_over_floor,
                  s.all->worst_time_over_floor, s.all->worst_case.c_str());
    if (s.num_vs_first > 0) line += strprintf("; vs %s %.3f", first.c_str(), s.geomean_vs_first);
    if (s.all->num_peer_cases > 0)
      line += strprintf("; peer/ours %.3f", s.all->geomean_peer_over_ours);
    if (s.all->num_fp8_speedup_cases > 0) {
      line += strprintf("; fp8 speedup %.3f (%d cases)", s.all->geomean_fp8_speedup,
                        s.all->num_fp8_speedup_cases);
    }
    lines.push_back(line);
  }
  lines.push_back(
      strprintf("# fastest, of the %d cases that two or more backends ran:", num_compared));
  for (const BackendSummary& s : c.per_backend) {
    const std::string list = format_case_list(s.fastest);
    lines.push_back(strprintf("#   %-*s %3d: %s", name_width, s.backend.c_str(),
                              static_cast<int>(s.fastest.size()), list.c_str()));
  }
  const bool asked = std::any_of(c.cases.begin(), c.cases.end(),
                                 [](const ComparedCase& k) { return !k.auto_choice.empty(); });
  if (!asked) return lines;
  const AutoSummary& a = c.autos;
  if (a.num_cases == 0) {
    lines.push_back("# auto: its pick was not among the backends timed in any compared case");
    return lines;
  }
  lines.push_back(strprintf(
      "# auto picked the fastest in %d of %d cases; auto/fastest geometric mean %.3f, worst %.3f",
      a.num_fastest, a.num_cases, a.geomean_over_fastest, a.worst_over_fastest));
  for (const AutoMiss& m : a.misses) {
    lines.push_back(strprintf("#   missed %s T=%lld: auto %s, fastest %s (%s/%s = %.3f)",
                              m.key.model.c_str(), static_cast<long long>(m.key.tokens),
                              m.picked.c_str(), m.fastest.c_str(), m.picked.c_str(),
                              m.fastest.c_str(), m.picked_over_fastest));
  }
  lines.push_back("# time/floor where auto picks each backend:");
  for (const BackendSummary& s : c.per_backend) {
    if (!s.auto_picked) {
      lines.push_back(strprintf("#   %-*s   0 cases", name_width, s.backend.c_str()));
      continue;
    }
    lines.push_back(strprintf(
        "#   %-*s %3d cases: geometric mean %.3f, worst %.3f (%s)", name_width, s.backend.c_str(),
        s.auto_picked->num_cases, s.auto_picked->geomean_time_over_floor,
        s.auto_picked->worst_time_over_floor, s.auto_picked->worst_case.c_str()));
  }
  return lines;
}

}  // namespace moe::bench
