// Expert-load statistics: the moving window, counting routed ids, the statistics file (round
// trip and malformed files) and the synthetic Zipf load.
#include "eplb/expert_load.h"
#include "common/test_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>

#include "moe/errors.h"

namespace moe {
namespace {

using testing::expect_error;

namespace fs = std::filesystem;

std::vector<int64_t> random_counts(int num_experts, std::mt19937& rng) {
  std::vector<int64_t> c(num_experts);
  for (int64_t& x : c) x = 1 + static_cast<int64_t>(rng() % 1000);
  return c;
}

// A file in the temp directory, removed when the test ends.
struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& name)
      : path(fs::temp_directory_path() / ("moe_eplb_" + std::to_string(::getpid()) + "_" + name)) {}
  ~TempFile() { fs::remove(path); }
  void write(const std::string& text) const { std::ofstream(path) << text; }
};

TEST(ExpertLoadWindow, KeepsTheLastNForwards) {
  std::mt19937 rng(7);
  const int num_experts = 6;
  ExpertLoadWindow window(num_experts, 3);
  std::vector<std::vector<int64_t>> added;
  for (int i = 0; i < 7; ++i) {
    added.push_back(random_counts(num_experts, rng));
    window.add(added.back());
    const int held = std::min(i + 1, 3);
    ASSERT_EQ(window.size(), held);
    std::vector<int64_t> expected(num_experts, 0);
    for (int f = 0; f < held; ++f) {
      const auto& row = added[added.size() - held + f];
      const auto got = window.forward(f);
      EXPECT_TRUE(std::equal(got.begin(), got.end(), row.begin())) << "forward " << f;
      for (int e = 0; e < num_experts; ++e) expected[e] += row[e];
    }
    const auto total = window.total();
    EXPECT_TRUE(std::equal(total.begin(), total.end(), expected.begin())) << "after " << i + 1;
  }
  window.clear();
  EXPECT_EQ(window.size(), 0);
  EXPECT_EQ(std::accumulate(window.total().begin(), window.total().end(), int64_t{0}), 0);
}

TEST(ExpertLoadWindow, RejectsBadCounts) {
  ExpertLoadWindow window(4, 2);
  expect_error([&] { window.add(std::vector<int64_t>{1, 2, 3}); }, "expected num_experts = 4");
  expect_error([&] { window.add(std::vector<int64_t>{1, 2, -3, 4}); }, "expert 2 is negative");
  expect_error([&] { window.forward(0); }, "outside [0, 0)");
  expect_error([] { ExpertLoadWindow(0, 2); }, "num_experts must be >= 1");
  expect_error([] { ExpertLoadWindow(4, 0); }, "window size must be >= 1");
}

TEST(ExpertLoad, CountsRoutedIds) {
  std::mt19937 rng(3);
  const int num_experts = 16;
  std::vector<int32_t> ids(200 * 4);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % num_experts);
  std::vector<int64_t> counts(num_experts, 5);  // counting adds to what is there
  count_expert_tokens(ids, counts);
  for (int e = 0; e < num_experts; ++e) {
    EXPECT_EQ(counts[e], 5 + std::count(ids.begin(), ids.end(), e)) << "expert " << e;
  }
  ids[37] = num_experts;
  expect_error([&] { count_expert_tokens(ids, counts); }, "expert id 16 at index 37");
}

TEST(ExpertLoadFile, RoundTrip) {
  std::mt19937 rng(11);
  const int num_experts = 9;
  ExpertLoadWindow window(num_experts, 4);
  for (int i = 0; i < 6; ++i) window.add(random_counts(num_experts, rng));  // wrapped ring
  const TempFile file("round_trip.json");
  write_expert_load_file(file.path.string(), window);
  const ExpertLoadWindow back = read_expert_load_file(file.path.string());
  EXPECT_EQ(back.num_experts(), num_experts);
  EXPECT_EQ(back.capacity(), 4);
  ASSERT_EQ(back.size(), 4);
  for (int f = 0; f < 4; ++f) {
    const auto a = window.forward(f), b = back.forward(f);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << "forward " << f;
  }
  EXPECT_TRUE(std::equal(window.total().begin(), window.total().end(), back.total().begin()));
  // An empty window survives too.
  const ExpertLoadWindow empty(3, 5);
  const ExpertLoadWindow empty_back = expert_load_from_json(expert_load_to_json(empty));
  EXPECT_EQ(empty_back.size(), 0);
  EXPECT_EQ(empty_back.capacity(), 5);
  EXPECT_EQ(empty_back.num_experts(), 3);
}

TEST(ExpertLoadFile, MinimalFormAndWindowSize) {
  // Only the required fields: the window holds every forward.
  const ExpertLoadWindow a =
      expert_load_from_json(R"({"num_experts": 2, "window": [[1, 2], [3, 4]]})");
  EXPECT_EQ(a.capacity(), 2);
  EXPECT_EQ(a.total()[0], 4);
  EXPECT_EQ(a.total()[1], 6);
  // More forwards than window_size: the newest ones stay.
  const ExpertLoadWindow b = expert_load_from_json(
      R"({"num_experts": 2, "window_size": 2, "window": [[1, 2], [3, 4], [5, 6]]})");
  EXPECT_EQ(b.size(), 2);
  EXPECT_EQ(b.forward(0)[0], 3);
  EXPECT_EQ(b.total()[1], 10);
}

TEST(ExpertLoadFile, MalformedFilesSayWhatAndWhere) {
  struct Case {
    const char* text;
    const char* needle;
  };
  const Case cases[] = {
      {"{\"num_experts\": 2, \"window\": [[1, 2]", "not valid JSON"},
      {"[[1, 2]]", "expected a JSON object"},
      {R"({"window": [[1, 2]]})", "missing \"num_experts\""},
      {R"({"num_experts": 0, "window": []})", "\"num_experts\" must be an integer"},
      {R"({"num_experts": "2", "window": []})", "\"num_experts\" must be an integer"},
      {R"({"num_experts": 2})", "missing \"window\""},
      {R"({"num_experts": 2, "window": {"a": 1}})", "\"window\" must be an array"},
      {R"({"num_experts": 2, "window": [[1, 2], 3]})", "window[1] must be an array"},
      {R"({"num_experts": 2, "window": [[1, 2], [1, 2, 3]]})", "window[1] has 3 counts"},
      {R"({"num_experts": 2, "window": [[1, -2]]})", "window[0][1] must be a non-negative"},
      {R"({"num_experts": 2, "window": [[1.5, 2]]})", "window[0][0] must be a non-negative"},
      {R"({"num_experts": 2, "window": [["1", 2]]})", "window[0][0] must be a non-negative"},
      {R"({"format": "other", "num_experts": 2, "window": []})", "\"format\" is \"other\""},
      {R"({"version": 2, "num_experts": 2, "window": []})", "unsupported \"version\" 2"},
      {R"({"num_experts": 2, "window_size": 0, "window": []})", "\"window_size\" must be"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    expect_error([&] { expert_load_from_json(c.text, "test.json"); }, c.needle);
    expect_error([&] { expert_load_from_json(c.text, "test.json"); }, "test.json");
  }
  // From a file: the path is named.
  const TempFile file("malformed.json");
  file.write(R"({"num_experts": 3, "window": [[1, 2]]})");
  expect_error([&] { read_expert_load_file(file.path.string()); }, file.path.string());
  expect_error([&] { read_expert_load_file(file.path.string()); }, "window[0] has 2 counts");
  expect_error([] { read_expert_load_file("/nonexistent/dir/load.json"); },
               "cannot open expert-load file '/nonexistent/dir/load.json'");
}

TEST(ZipfLoad, SumsExactlyAndFollowsTheLaw) {
  for (double s : {0.5, 1.0, 1.5}) {
    for (uint64_t seed : {1u, 2u}) {
      const int num_experts = 256;
      const int64_t total = 32768;
      const std::vector<int64_t> c = zipf_expert_load(num_experts, total, s, seed);
      ASSERT_EQ(c.size(), static_cast<size_t>(num_experts));
      EXPECT_EQ(std::accumulate(c.begin(), c.end(), int64_t{0}), total);
      // Sorted, the counts are the rounded shares 1 / i^s.
      std::vector<int64_t> sorted = c;
      std::sort(sorted.rbegin(), sorted.rend());
      double h = 0;
      for (int i = 1; i <= num_experts; ++i) h += std::pow(i, -s);
      for (int i = 0; i < num_experts; ++i) {
        EXPECT_NEAR(static_cast<double>(sorted[i]), total * std::pow(i + 1, -s) / h, 1.0)
            << "rank " << i << " s " << s;
      }
      EXPECT_EQ(c, zipf_expert_load(num_experts, total, s, seed)) << "not deterministic";
    }
  }
  // The seed permutes which expert is hot.
  const auto a = zipf_expert_load(64, 10000, 1.0, 1), b = zipf_expert_load(64, 10000, 1.0, 2);
  EXPECT_NE(a, b);
  std::vector<int64_t> sa = a, sb = b;
  std::sort(sa.begin(), sa.end());
  std::sort(sb.begin(), sb.end());
  EXPECT_EQ(sa, sb);
  // s = 0 is uniform.
  const auto u = zipf_expert_load(10, 1003, 0.0, 5);
  EXPECT_LE(*std::max_element(u.begin(), u.end()) - *std::min_element(u.begin(), u.end()), 1);
  expect_error([] { zipf_expert_load(0, 10, 1.0, 1); }, "num_experts must be >= 1");
  expect_error([] { zipf_expert_load(4, -1, 1.0, 1); }, "must be >= 0");
  expect_error([] { zipf_expert_load(4, 10, -1.0, 1); }, "Zipf exponent");
}

}  // namespace
}  // namespace moe
