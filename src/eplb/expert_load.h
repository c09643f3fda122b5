// Expert-load statistics of EPLB (DESIGN.md "EPLB"): tokens per expert per forward, summed
// over the EP ranks, kept as a moving window of the last N forwards; the file that `moe run`
// and `moe bench` dump them to and `moe eplb plan --stats` reads; a synthetic Zipf load.
//
// File format (JSON, one object):
//   {
//     "format": "moe-eplb-expert-load",   optional; when present it must be this string
//     "version": 1,                        optional; when present it must be 1
//     "num_experts": E,                    required, >= 1
//     "window_size": N,                    optional, >= 1; default max(1, forwards in file)
//     "window": [[c_0, ..., c_{E-1}], ...] required: one row per forward, oldest first, each
//   }                                      E non-negative integers (tokens of each expert)
// A file with more forwards than window_size keeps the newest window_size of them, as
// adding them one by one would.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moe {

/// The last `capacity` forwards' tokens per expert, and their sum.
class ExpertLoadWindow {
 public:
  /// An empty window of up to `capacity` forwards of `num_experts` counts. Throws moe::Error
  /// unless both are >= 1.
  ExpertLoadWindow(int num_experts, int capacity);

  int num_experts() const { return num_experts_; }
  int capacity() const { return capacity_; }
  /// Forwards held now (<= capacity).
  int size() const { return size_; }

  /// Adds one forward's counts [num_experts] (already summed over ranks); when the window is
  /// full the oldest forward drops out. Throws moe::Error on a wrong length or a negative count.
  void add(std::span<const int64_t> counts);
  /// Forward `i` of the window, 0 the oldest [num_experts].
  std::span<const int64_t> forward(int i) const;
  /// Tokens per expert summed over the window [num_experts].
  std::span<const int64_t> total() const { return total_; }
  /// total() as the load vector the placement functions take.
  std::vector<double> total_load() const { return {total_.begin(), total_.end()}; }
  void clear();

 private:
  int num_experts_;
  int capacity_;
  int size_ = 0;
  int oldest_ = 0;              // ring position of forward 0
  std::vector<int64_t> rows_;   // [capacity, num_experts] ring of forwards
  std::vector<int64_t> total_;  // [num_experts]
};

/// counts[e] += number of entries of ids (expert ids, e.g. topk_ids [T, k] flattened) equal
/// to e. Throws moe::Error naming the first id outside [0, counts.size()).
void count_expert_tokens(std::span<const int32_t> ids, std::span<int64_t> counts);

/// The window as the JSON text of the file format above.
std::string expert_load_to_json(const ExpertLoadWindow& window);
/// Parses the file format above; `source` names the text in errors (a path). Throws
/// moe::Error naming the field (and row, column) that is missing or malformed.
ExpertLoadWindow expert_load_from_json(std::string_view text,
                                       std::string_view source = "expert-load JSON");
/// Writes / reads the file format above. Throws moe::Error naming the path on I/O errors.
void write_expert_load_file(const std::string& path, const ExpertLoadWindow& window);
ExpertLoadWindow read_expert_load_file(const std::string& path);

/// A synthetic skewed load: `num_assignments` token -> expert assignments (tokens x top-k)
/// over `num_experts` experts, expert perm[i] receiving a share proportional to
/// 1 / (i + 1)^zipf_s where perm is a random permutation of the experts drawn from `seed`
/// (deterministic on every platform). Counts are rounded by largest remainder and sum to
/// num_assignments exactly. zipf_s = 0 gives a uniform load. Throws moe::Error on
/// num_experts < 1, num_assignments < 0 or a negative / non-finite zipf_s.
std::vector<int64_t> zipf_expert_load(int num_experts, int64_t num_assignments, double zipf_s,
                                      uint64_t seed);

}  // namespace moe
