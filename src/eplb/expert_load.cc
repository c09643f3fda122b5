// Expert-load window, counting, the statistics file and the Zipf load (contract in
// expert_load.h).
#include "eplb/expert_load.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "core/random.h"
#include "moe/errors.h"

namespace moe {

namespace {

constexpr std::string_view kFormatName = "moe-eplb-expert-load";
constexpr int kFormatVersion = 1;

}  // namespace

ExpertLoadWindow::ExpertLoadWindow(int num_experts, int capacity)
    : num_experts_(num_experts), capacity_(capacity) {
  MOE_CHECK(num_experts >= 1, "ExpertLoadWindow: num_experts must be >= 1, got ", num_experts);
  MOE_CHECK(capacity >= 1, "ExpertLoadWindow: window size must be >= 1 forward, got ", capacity);
  rows_.assign(static_cast<size_t>(capacity) * num_experts, 0);
  total_.assign(num_experts, 0);
}

void ExpertLoadWindow::add(std::span<const int64_t> counts) {
  MOE_CHECK(static_cast<int64_t>(counts.size()) == num_experts_,
            "ExpertLoadWindow::add: ", counts.size(),
            " counts, expected num_experts = ", num_experts_);
  for (size_t e = 0; e < counts.size(); ++e) {
    MOE_CHECK(counts[e] >= 0, "ExpertLoadWindow::add: count of expert ", e, " is negative (",
              counts[e], ")");
  }
  int pos;
  if (size_ < capacity_) {
    pos = (oldest_ + size_) % capacity_;
    ++size_;
  } else {
    pos = oldest_;  // the oldest forward drops out
    oldest_ = (oldest_ + 1) % capacity_;
  }
  int64_t* row = rows_.data() + static_cast<size_t>(pos) * num_experts_;
  for (int e = 0; e < num_experts_; ++e) {
    total_[e] += counts[e] - row[e];  // row[e] is 0 for a slot never filled
    row[e] = counts[e];
  }
}

std::span<const int64_t> ExpertLoadWindow::forward(int i) const {
  MOE_CHECK(i >= 0 && i < size_, "ExpertLoadWindow::forward: index ", i, " outside [0, ", size_,
            ")");
  const size_t pos = static_cast<size_t>((oldest_ + i) % capacity_);
  return {rows_.data() + pos * num_experts_, static_cast<size_t>(num_experts_)};
}

void ExpertLoadWindow::clear() {
  std::fill(rows_.begin(), rows_.end(), 0);
  std::fill(total_.begin(), total_.end(), 0);
  size_ = 0;
  oldest_ = 0;
}

void count_expert_tokens(std::span<const int32_t> ids, std::span<int64_t> counts) {
  const int64_t num_experts = static_cast<int64_t>(counts.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t e = ids[i];
    MOE_CHECK(e >= 0 && e < num_experts, "count_expert_tokens: expert id ", e, " at index ", i,
              " is outside [0, ", num_experts, ")");
    ++counts[e];
  }
}

// ---- The statistics file ------------------------------------------------------------------

std::string expert_load_to_json(const ExpertLoadWindow& window) {
  // One forward per line: readable, and diffs stay small.
  std::ostringstream os;
  os << "{\n  \"format\": \"" << kFormatName << "\",\n  \"version\": " << kFormatVersion
     << ",\n  \"num_experts\": " << window.num_experts()
     << ",\n  \"window_size\": " << window.capacity() << ",\n  \"window\": [";
  for (int i = 0; i < window.size(); ++i) {
    os << (i ? ",\n    [" : "\n    [");
    const std::span<const int64_t> row = window.forward(i);
    for (size_t e = 0; e < row.size(); ++e) os << (e ? ", " : "") << row[e];
    os << "]";
  }
  os << (window.size() ? "\n  ]\n}\n" : "]\n}\n");
  return os.str();
}

ExpertLoadWindow expert_load_from_json(std::string_view text, std::string_view source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    MOE_THROW(source, ": not valid JSON (", e.what(), ")");
  }
  MOE_CHECK(j.is_object(), source,
            ": expected a JSON object {\"num_experts\": E, \"window\": "
            "[[counts...], ...]}, got a ",
            j.type_name());
  if (j.contains("format")) {
    MOE_CHECK(j["format"].is_string() && j["format"].get<std::string>() == kFormatName, source,
              ": \"format\" is ", j["format"].dump(), ", expected \"", kFormatName, "\"");
  }
  if (j.contains("version")) {
    MOE_CHECK(j["version"].is_number_integer() && j["version"].get<int64_t>() == kFormatVersion,
              source, ": unsupported \"version\" ", j["version"].dump(), " (this build reads ",
              kFormatVersion, ")");
  }
  MOE_CHECK(j.contains("num_experts"), source, ": missing \"num_experts\"");
  const nlohmann::json& jn = j["num_experts"];
  MOE_CHECK(jn.is_number_integer() && jn.get<int64_t>() >= 1 && jn.get<int64_t>() <= (1 << 24),
            source, ": \"num_experts\" must be an integer in [1, 2^24], got ", jn.dump());
  const int num_experts = jn.get<int>();

  MOE_CHECK(j.contains("window"), source, ": missing \"window\" (one array of ", num_experts,
            " counts per forward)");
  const nlohmann::json& rows = j["window"];
  MOE_CHECK(rows.is_array(), source, ": \"window\" must be an array of forwards, got a ",
            rows.type_name());

  int capacity = std::max<int>(1, static_cast<int>(rows.size()));
  if (j.contains("window_size")) {
    const nlohmann::json& jw = j["window_size"];
    MOE_CHECK(jw.is_number_integer() && jw.get<int64_t>() >= 1 && jw.get<int64_t>() <= (1 << 24),
              source, ": \"window_size\" must be an integer in [1, 2^24], got ", jw.dump());
    capacity = jw.get<int>();
  }

  ExpertLoadWindow window(num_experts, capacity);
  std::vector<int64_t> counts(num_experts);
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& row = rows[i];
    MOE_CHECK(row.is_array(), source, ": window[", i, "] must be an array of ", num_experts,
              " counts, got a ", row.type_name());
    MOE_CHECK(static_cast<int64_t>(row.size()) == num_experts, source, ": window[", i, "] has ",
              row.size(), " counts, expected num_experts = ", num_experts);
    for (int e = 0; e < num_experts; ++e) {
      const nlohmann::json& c = row[e];
      MOE_CHECK(c.is_number_integer() && c.get<int64_t>() >= 0, source, ": window[", i, "][", e,
                "] must be a non-negative integer token count, got ", c.dump());
      counts[e] = c.get<int64_t>();
    }
    window.add(counts);
  }
  return window;
}

void write_expert_load_file(const std::string& path, const ExpertLoadWindow& window) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  MOE_CHECK(out.good(), "cannot open expert-load file '", path, "' for writing");
  out << expert_load_to_json(window);
  out.close();
  MOE_CHECK(out.good(), "writing expert-load file '", path, "' failed");
}

ExpertLoadWindow read_expert_load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in.good(), "cannot open expert-load file '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  MOE_CHECK(!in.bad(), "reading expert-load file '", path, "' failed");
  return expert_load_from_json(text.str(), "expert-load file '" + path + "'");
}

// ---- Synthetic Zipf load ------------------------------------------------------------------

std::vector<int64_t> zipf_expert_load(int num_experts, int64_t num_assignments, double zipf_s,
                                      uint64_t seed) {
  MOE_CHECK(num_experts >= 1, "zipf_expert_load: num_experts must be >= 1, got ", num_experts);
  MOE_CHECK(num_assignments >= 0, "zipf_expert_load: the number of assignments must be >= 0, got ",
            num_assignments);
  MOE_CHECK(std::isfinite(zipf_s) && zipf_s >= 0,
            "zipf_expert_load: the Zipf exponent must be "
            "finite and >= 0, got ",
            zipf_s);
  // Fisher-Yates with a counter-based hash: the same permutation on every platform (unlike
  // std::shuffle, whose algorithm the standard leaves open).
  std::vector<int> perm(num_experts);
  std::iota(perm.begin(), perm.end(), 0);
  const uint64_t stream = stream_id(seed, 0x5a1bf);
  for (int i = num_experts - 1; i > 0; --i) {
    const uint64_t j = mix64(stream ^ mix64(static_cast<uint64_t>(i))) % (i + 1);
    std::swap(perm[i], perm[j]);
  }
  // Shares by popularity rank, then largest remainder so that the counts sum exactly.
  std::vector<double> share(num_experts);
  double sum = 0;
  for (int i = 0; i < num_experts; ++i) {
    share[i] = 1.0 / std::pow(static_cast<double>(i + 1), zipf_s);
    sum += share[i];
  }
  std::vector<int64_t> by_rank(num_experts);
  std::vector<double> remainder(num_experts);
  int64_t assigned = 0;
  for (int i = 0; i < num_experts; ++i) {
    const double quota = static_cast<double>(num_assignments) * share[i] / sum;
    by_rank[i] = static_cast<int64_t>(std::floor(quota));
    remainder[i] = quota - static_cast<double>(by_rank[i]);
    assigned += by_rank[i];
  }
  std::vector<int> order(num_experts);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return remainder[a] > remainder[b]; });
  // NOTE: floating-point quotas can leave the floor sum off by more than num_experts in
  // theory; the loop wraps around so the total is exact regardless.
  for (int64_t i = 0; assigned < num_assignments; ++i, ++assigned) {
    ++by_rank[order[i % num_experts]];
  }
  for (int64_t i = 0; assigned > num_assignments; ++i) {
    int64_t& c = by_rank[order[num_experts - 1 - i % num_experts]];
    if (c > 0) {
      --c;
      --assigned;
    }
  }
  std::vector<int64_t> counts(num_experts);
  for (int i = 0; i < num_experts; ++i) counts[perm[i]] = by_rank[i];
  return counts;
}

}  // namespace moe
