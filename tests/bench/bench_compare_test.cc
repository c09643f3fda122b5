// `moe bench --backend a,b` (bench/harness/bench_math.h), on the CPU: parsing the backend
// list, grouping rows per (model, T), the fastest backend, ratios to the first listed
// backend, how "auto" did, the per-backend summary, the comparison table, its closing lines
// and the JSON; hand-computed cases and a randomised one checked against direct arithmetic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "bench/harness/bench_math.h"
#include "moe/errors.h"

namespace moe::bench {
namespace {

// A row of `backend` at T tokens: median `ms`, floor 0.1 ms (time/floor = ms / 0.1).
CaseResult row(const std::string& model, int64_t t, const std::string& backend, double ms,
               const std::string& auto_choice = "") {
  CaseResult c;
  c.model = model;
  c.tokens = t;
  c.backend = backend;
  c.auto_choice = auto_choice;
  c.auto_reason = auto_choice.empty() ? "" : "cost model at T=" + std::to_string(t);
  c.ours = summarize_times({ms, ms * 1.1, ms * 0.9});
  c.bytes = 3e12 * 0.1e-3;  // memory-bound at 3 TB/s: floor 0.1 ms
  c.flops = 1e9;
  c.floor = case_floor(c.bytes, c.flops, Roofline{3e12, 1e15}, GemmFormat::kBF16);
  c.input_sets = 2;
  return c;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

const std::vector<std::string> kBoth = {"dense", "grouped"};

// dense and grouped on three cases, rows in the order the runner produces them (backend by
// backend): a T=1 dense faster, auto dense (hit); a T=8 grouped faster, auto dense (miss,
// 1.5x); b T=1 only grouped ran (dense skipped), auto grouped.
std::vector<CaseResult> three_cases() {
  return {row("a", 1, "dense", 0.10, "dense"), row("a", 8, "dense", 0.30, "dense"),
          row("a", 1, "grouped", 0.12, "dense"), row("a", 8, "grouped", 0.20, "dense"),
          row("b", 1, "grouped", 0.05, "grouped")};
}

// ---- Parsing ---------------------------------------------------------------------------------

TEST(BenchCompare, ParsesTheBackendList) {
  const std::vector<std::string> known = {"grouped", "dense", "reference"};
  EXPECT_EQ(parse_backend_list("dense, grouped", known), kBoth);
  EXPECT_EQ(parse_backend_list("grouped,dense,grouped", known),
            (std::vector<std::string>{"grouped", "dense"}));
  EXPECT_EQ(parse_backend_list("grouped", known), (std::vector<std::string>{"grouped"}));
  EXPECT_EQ(parse_backend_list(" auto ", known), (std::vector<std::string>{"auto"}));
  EXPECT_THROW(parse_backend_list("auto,dense", known), Error);
  EXPECT_THROW(parse_backend_list("", known), Error);
  EXPECT_THROW(parse_backend_list(" , ", known), Error);
  try {
    parse_backend_list("dense,dnse", known);
    FAIL() << "an unknown backend was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.message(), "'dnse'")) << e.message();
    EXPECT_TRUE(contains(e.message(), "grouped, dense, reference")) << e.message();
  }
}

// ---- Grouping and ratios -----------------------------------------------------------------------

TEST(BenchCompare, GroupsRowsPerCaseWithFastestAndRatios) {
  const std::vector<CaseResult> rows = three_cases();
  const Comparison c = compare_backends(rows, kBoth);
  ASSERT_EQ(c.cases.size(), 3u);
  EXPECT_EQ(c.cases[0].key, (CaseKey{"a", 1}));
  EXPECT_EQ(c.cases[1].key, (CaseKey{"a", 8}));
  EXPECT_EQ(c.cases[2].key, (CaseKey{"b", 1}));

  const ComparedCase& a1 = c.cases[0];
  EXPECT_EQ(a1.rows[0], 0u);
  EXPECT_EQ(a1.rows[1], 2u);
  EXPECT_EQ(a1.fastest, 0);
  EXPECT_EQ(a1.auto_index, 0);
  EXPECT_NEAR(*a1.vs_first(0), 1.0, 1e-12);
  EXPECT_NEAR(*a1.vs_first(1), 1.2, 1e-12);
  EXPECT_NEAR(*a1.auto_over_fastest(), 1.0, 1e-12);
  EXPECT_NEAR(*a1.time_over_floor[1], 1.2, 1e-9);

  const ComparedCase& a8 = c.cases[1];
  EXPECT_EQ(a8.fastest, 1);
  EXPECT_EQ(a8.auto_index, 0);
  EXPECT_NEAR(*a8.vs_first(1), 0.2 / 0.3, 1e-12);
  EXPECT_NEAR(*a8.auto_over_fastest(), 1.5, 1e-12);

  // One backend ran: no fastest, no ratio to the missing first backend.
  const ComparedCase& b1 = c.cases[2];
  EXPECT_FALSE(b1.rows[0].has_value());
  EXPECT_EQ(b1.rows[1], 4u);
  EXPECT_EQ(b1.fastest, -1);
  EXPECT_EQ(b1.auto_index, 1);
  EXPECT_FALSE(b1.vs_first(1).has_value());
  EXPECT_FALSE(b1.vs_first(0).has_value());
  EXPECT_FALSE(b1.auto_over_fastest().has_value());
}

TEST(BenchCompare, SummarisesPerBackendAndAuto) {
  const std::vector<CaseResult> rows = three_cases();
  const Comparison c = compare_backends(rows, kBoth);
  ASSERT_EQ(c.per_backend.size(), 2u);

  const BackendSummary& dense = c.per_backend[0];
  EXPECT_EQ(dense.backend, "dense");
  ASSERT_TRUE(dense.all.has_value());
  EXPECT_EQ(dense.all->num_cases, 2);
  EXPECT_NEAR(dense.all->geomean_time_over_floor, std::sqrt(1.0 * 3.0), 1e-9);
  EXPECT_NEAR(dense.all->worst_time_over_floor, 3.0, 1e-9);
  EXPECT_EQ(dense.all->worst_case, "a T=8");
  EXPECT_EQ(dense.num_vs_first, 2);
  EXPECT_NEAR(dense.geomean_vs_first, 1.0, 1e-12);
  EXPECT_EQ(dense.fastest, (std::vector<CaseKey>{{"a", 1}}));
  ASSERT_TRUE(dense.auto_picked.has_value());
  EXPECT_EQ(dense.auto_picked->num_cases, 2);

  const BackendSummary& grouped = c.per_backend[1];
  ASSERT_TRUE(grouped.all.has_value());
  EXPECT_EQ(grouped.all->num_cases, 3);
  EXPECT_NEAR(grouped.all->geomean_time_over_floor, std::cbrt(1.2 * 2.0 * 0.5), 1e-9);
  EXPECT_NEAR(grouped.all->worst_time_over_floor, 2.0, 1e-9);
  EXPECT_EQ(grouped.num_vs_first, 2);  // b T=1 has no dense row
  EXPECT_NEAR(grouped.geomean_vs_first, std::sqrt(1.2 * (0.2 / 0.3)), 1e-12);
  EXPECT_EQ(grouped.fastest, (std::vector<CaseKey>{{"a", 8}}));
  ASSERT_TRUE(grouped.auto_picked.has_value());
  EXPECT_EQ(grouped.auto_picked->num_cases, 1);
  EXPECT_NEAR(grouped.auto_picked->geomean_time_over_floor, 0.5, 1e-9);

  const AutoSummary& a = c.autos;
  EXPECT_EQ(a.num_cases, 2);  // b T=1: only one backend ran
  EXPECT_EQ(a.num_fastest, 1);
  EXPECT_NEAR(a.geomean_over_fastest, std::sqrt(1.5), 1e-12);
  EXPECT_NEAR(a.worst_over_fastest, 1.5, 1e-12);
  ASSERT_EQ(a.misses.size(), 1u);
  EXPECT_EQ(a.misses[0].key, (CaseKey{"a", 8}));
  EXPECT_EQ(a.misses[0].picked, "dense");
  EXPECT_EQ(a.misses[0].fastest, "grouped");
  EXPECT_NEAR(a.misses[0].picked_over_fastest, 1.5, 1e-12);
}

TEST(BenchCompare, TiesGoToTheFirstListedAndCountAsAutoHits) {
  const std::vector<CaseResult> rows = {row("m", 4, "dense", 0.2, "grouped"),
                                        row("m", 4, "grouped", 0.2, "grouped")};
  const Comparison c = compare_backends(rows, kBoth);
  ASSERT_EQ(c.cases.size(), 1u);
  EXPECT_EQ(c.cases[0].fastest, 0);
  EXPECT_EQ(c.autos.num_cases, 1);
  EXPECT_EQ(c.autos.num_fastest, 1);
  EXPECT_TRUE(c.autos.misses.empty());
}

TEST(BenchCompare, AutoPickNotTimedIsNotJudged) {
  const std::vector<CaseResult> rows = {row("m", 1, "dense", 0.2, "reference"),
                                        row("m", 1, "grouped", 0.3, "reference")};
  const Comparison c = compare_backends(rows, kBoth);
  EXPECT_EQ(c.cases[0].auto_index, -1);
  EXPECT_EQ(c.autos.num_cases, 0);
  EXPECT_FALSE(c.per_backend[0].auto_picked.has_value());
}

TEST(BenchCompare, RejectsRowsOutsideTheList) {
  std::vector<CaseResult> rows = three_cases();
  rows.push_back(row("a", 1, "reference", 1.0));
  EXPECT_THROW(compare_backends(rows, kBoth), Error);
  rows.pop_back();
  rows.push_back(row("a", 8, "grouped", 0.25));  // a second grouped row of a T=8
  EXPECT_THROW(compare_backends(rows, kBoth), Error);
  EXPECT_THROW(compare_backends(rows, std::vector<std::string>{}), Error);
}

TEST(BenchCompare, RandomTimesAgreeWithDirectArithmetic) {
  const std::vector<std::string> backends = {"dense", "grouped", "reference"};
  std::mt19937 rng(20261122);
  std::uniform_real_distribution<double> ms_dist(0.01, 2.0);
  std::uniform_int_distribution<int> pick(0, 2);
  std::bernoulli_distribution skip(0.15);
  // Per model x T: which backends ran and their times, as the ground truth.
  struct Truth {
    CaseKey key;
    std::vector<double> ms;  // < 0: did not run
    int auto_b = 0;
  };
  std::vector<Truth> truth;
  std::vector<CaseResult> rows;
  for (const char* model : {"m1", "m2", "m3"}) {
    for (int64_t t : {1, 2, 4, 8, 16, 32, 64}) {
      Truth tr{{model, t}, {}, pick(rng)};
      for (size_t b = 0; b < backends.size(); ++b) tr.ms.push_back(skip(rng) ? -1 : ms_dist(rng));
      truth.push_back(tr);
    }
  }
  for (size_t b = 0; b < backends.size(); ++b) {  // backend by backend, as the runner does
    for (const Truth& tr : truth) {
      if (tr.ms[b] < 0) continue;
      rows.push_back(row(tr.key.model, tr.key.tokens, backends[b], tr.ms[b], backends[tr.auto_b]));
    }
  }
  const Comparison c = compare_backends(rows, backends);
  int auto_cases = 0, auto_hits = 0;
  std::vector<double> vs_grouped;
  for (const Truth& tr : truth) {
    const auto k = std::find_if(c.cases.begin(), c.cases.end(),
                                [&](const ComparedCase& x) { return x.key == tr.key; });
    const int ran = static_cast<int>(
        std::count_if(tr.ms.begin(), tr.ms.end(), [](double v) { return v >= 0; }));
    if (ran == 0) {
      EXPECT_EQ(k, c.cases.end());
      continue;
    }
    ASSERT_NE(k, c.cases.end());
    int fastest = -1;
    for (int b = 0; b < 3; ++b) {
      if (tr.ms[b] >= 0 && (fastest < 0 || tr.ms[b] < tr.ms[fastest])) fastest = b;
    }
    EXPECT_EQ(k->fastest, ran >= 2 ? fastest : -1);
    for (int b = 0; b < 3; ++b) {
      // The row's median is the middle of {ms, 1.1 ms, 0.9 ms}: ms itself.
      if (tr.ms[b] >= 0 && tr.ms[0] >= 0) {
        EXPECT_NEAR(*k->vs_first(b), tr.ms[b] / tr.ms[0], 1e-12);
      } else {
        EXPECT_FALSE(k->vs_first(b).has_value());
      }
    }
    if (tr.ms[1] >= 0 && tr.ms[0] >= 0) vs_grouped.push_back(tr.ms[1] / tr.ms[0]);
    if (ran >= 2 && tr.ms[tr.auto_b] >= 0) {
      ++auto_cases;
      if (tr.auto_b == fastest) ++auto_hits;
      EXPECT_NEAR(*k->auto_over_fastest(), tr.ms[tr.auto_b] / tr.ms[fastest], 1e-12);
    }
  }
  EXPECT_EQ(c.autos.num_cases, auto_cases);
  EXPECT_EQ(c.autos.num_fastest, auto_hits);
  EXPECT_EQ(c.autos.misses.size(), static_cast<size_t>(auto_cases - auto_hits));
  EXPECT_EQ(c.per_backend[1].num_vs_first, static_cast<int>(vs_grouped.size()));
  EXPECT_NEAR(c.per_backend[1].geomean_vs_first, geometric_mean(vs_grouped), 1e-12);
  size_t fastest_total = 0;
  for (const BackendSummary& s : c.per_backend) fastest_total += s.fastest.size();
  EXPECT_EQ(fastest_total, static_cast<size_t>(std::count_if(
                               c.cases.begin(), c.cases.end(),
                               [](const ComparedCase& k) { return k.fastest >= 0; })));
}

// ---- Output ----------------------------------------------------------------------------------

TEST(BenchCompare, FormatsCaseLists) {
  EXPECT_EQ(format_case_list(std::vector<CaseKey>{}), "-");
  EXPECT_EQ(format_case_list(std::vector<CaseKey>{{"a", 1}, {"a", 2}, {"b", 8}, {"a", 4}}),
            "a T=1,2,4; b T=8");
}

TEST(BenchCompare, TableRowsAlignUnderTheHeader) {
  std::vector<CaseResult> rows = three_cases();
  rows[2].peer = summarize_times({0.24});  // a T=1 grouped: peer/ours 2.0
  rows[1].output_finite = false;
  const Comparison c = compare_backends(rows, kBoth);
  const std::string header = comparison_header(kBoth);
  EXPECT_TRUE(contains(header, " vs dense ")) << header;

  const std::vector<std::string> a1 = comparison_rows(c.cases[0], rows, kBoth);
  ASSERT_EQ(a1.size(), 2u);
  EXPECT_TRUE(a1[0].ends_with("  fastest, auto")) << a1[0];
  EXPECT_TRUE(contains(a1[1], " grouped ")) << a1[1];
  EXPECT_TRUE(contains(a1[1], " 1.20 ")) << a1[1];  // vs dense
  EXPECT_TRUE(a1[1].ends_with(" 2.00")) << a1[1];   // peer/ours, no note
  EXPECT_TRUE(contains(a1[0], "0.1000")) << a1[0];  // ms
  const std::vector<std::string> a8 = comparison_rows(c.cases[1], rows, kBoth);
  EXPECT_TRUE(a8[0].ends_with("  auto, output not finite!")) << a8[0];
  EXPECT_TRUE(a8[1].ends_with("  fastest")) << a8[1];
  const std::vector<std::string> b1 = comparison_rows(c.cases[2], rows, kBoth);
  ASSERT_EQ(b1.size(), 1u);
  EXPECT_TRUE(b1[0].ends_with("  auto")) << b1[0];

  // Each right-aligned column ends where its title ends; the backend column starts with its.
  for (const std::string& r : {a1[0], a1[1], a8[1], b1[0]}) {
    for (const char* title :
         {"T", "ms", "TFLOP/s", "GB/s", "floor ms", "time/floor", "vs dense", "peer/ours"}) {
      const size_t end =
          header.find(std::string(" ") + title + " ") + 1 + std::string(title).size();
      ASSERT_LE(end, r.size()) << title;
      EXPECT_NE(r[end - 1], ' ') << title << " in\n" << header << "\n" << r;
      if (end < r.size()) {
        EXPECT_EQ(r[end], ' ') << title << " in\n" << header << "\n" << r;
      }
    }
    const size_t backend_at = header.find(" backend ") + 1;
    EXPECT_NE(r[backend_at], ' ') << r;
    EXPECT_EQ(r[backend_at - 1], ' ') << r;
  }

  // auto's pick was not timed: said on the case's first row.
  const std::vector<CaseResult> other = {row("m", 1, "dense", 0.2, "reference"),
                                         row("m", 1, "grouped", 0.3, "reference")};
  const auto lines = comparison_rows(compare_backends(other, kBoth).cases[0], other, kBoth);
  EXPECT_TRUE(lines[0].ends_with("  fastest, auto: reference (not timed)")) << lines[0];
  // A long first backend name widens its column.
  const std::vector<std::string> long_names = {"reference", "grouped"};
  EXPECT_TRUE(contains(comparison_header(long_names), " vs reference "));
}

// --vs-bf16 in a comparison: each backend's fp8 rows carry that backend's bf16 times.
TEST(BenchCompare, Fp8SpeedupColumnJsonAndSummaryPerBackend) {
  std::vector<CaseResult> rows = three_cases();
  // bf16 rows of a T=1 and a T=8 for both backends; none for b T=1.
  const std::vector<CaseResult> dense_bf16 = {row("a", 1, "dense", 0.15),
                                              row("a", 8, "dense", 0.6)};
  const std::vector<CaseResult> grouped_bf16 = {row("a", 1, "grouped", 0.24),
                                                row("a", 8, "grouped", 0.3)};
  attach_bf16(std::span(rows).subspan(0, 2), dense_bf16);
  attach_bf16(std::span(rows).subspan(2), grouped_bf16);
  const Comparison c = compare_backends(rows, kBoth);
  ASSERT_EQ(c.cases.size(), 3u);
  EXPECT_NEAR(*c.cases[0].fp8_speedup[0], 1.5, 1e-12);  // dense a T=1: 0.15 / 0.10
  EXPECT_NEAR(*c.cases[0].fp8_speedup[1], 2.0, 1e-12);  // grouped a T=1: 0.24 / 0.12
  EXPECT_NEAR(*c.cases[1].fp8_speedup[0], 2.0, 1e-12);  // dense a T=8: 0.6 / 0.3
  EXPECT_NEAR(*c.cases[1].fp8_speedup[1], 1.5, 1e-12);  // grouped a T=8: 0.3 / 0.2
  EXPECT_FALSE(c.cases[2].fp8_speedup[1].has_value());
  EXPECT_FALSE(c.cases[2].fp8_speedup[0].has_value());  // dense did not run b T=1

  // Table: the column sits between peer/ours and the note, right-aligned under its title.
  const std::string header = comparison_header(kBoth, true);
  EXPECT_EQ(comparison_header(kBoth, false), comparison_header(kBoth));
  EXPECT_TRUE(contains(header, " peer/ours fp8 speedup  note")) << header;
  const std::vector<std::string> a1 = comparison_rows(c.cases[0], rows, kBoth, true);
  const std::vector<std::string> b1 = comparison_rows(c.cases[2], rows, kBoth, true);
  const size_t end = header.find(" fp8 speedup") + std::string(" fp8 speedup").size();
  for (const std::string& r : {a1[0], a1[1], b1[0]}) {
    ASSERT_LE(end, r.size()) << r;
    EXPECT_NE(r[end - 1], ' ') << header << "\n" << r;
    if (end < r.size()) {
      EXPECT_EQ(r[end], ' ') << header << "\n" << r;
    }
  }
  EXPECT_TRUE(a1[0].ends_with(" 1.50  fastest, auto")) << a1[0];
  EXPECT_TRUE(a1[1].ends_with(" 2.00")) << a1[1];
  EXPECT_TRUE(b1[0].ends_with("           -  auto")) << b1[0];
  // Without the flag the rows are as before.
  EXPECT_EQ(comparison_rows(c.cases[0], rows, kBoth),
            comparison_rows(c.cases[0], rows, kBoth, false));
  EXPECT_FALSE(contains(comparison_rows(c.cases[0], rows, kBoth)[0], "1.50"));

  // A bf16 output that was not finite is flagged in the note.
  rows[2].bf16_output_finite = false;
  EXPECT_TRUE(
      comparison_rows(c.cases[0], rows, kBoth, true)[1].ends_with("  bf16 output not finite!"));
  rows[2].bf16_output_finite = true;

  // JSON: per case keyed by backend; per backend in the summary.
  const nlohmann::json j = comparison_to_json(c);
  EXPECT_NEAR(j.at("cases").at(1).at("fp8_speedup").at("dense").get<double>(), 2.0, 1e-12);
  EXPECT_TRUE(j.at("cases").at(2).at("fp8_speedup").at("grouped").is_null());
  const nlohmann::json& grouped = j.at("per_backend").at(1).at("summary");
  EXPECT_EQ(grouped.at("num_fp8_speedup_cases"), 2);
  EXPECT_NEAR(grouped.at("geomean_fp8_speedup").get<double>(), std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(grouped.at("min_fp8_speedup").get<double>(), 1.5, 1e-12);

  // Closing lines: each backend's geometric mean speedup.
  std::string all;
  for (const std::string& l : comparison_summary_lines(c)) all += l + "\n";
  // Both backends: sqrt(1.5 * 2) over their two cases with a bf16 time.
  const std::string per_backend = "; fp8 speedup 1.732 (2 cases)";
  const size_t first = all.find(per_backend);
  ASSERT_NE(first, std::string::npos) << all;
  EXPECT_NE(all.find(per_backend, first + 1), std::string::npos) << all;
}

TEST(BenchCompare, SummaryLinesSayWhoWonWhereAndHowAutoDid) {
  const std::vector<CaseResult> rows = three_cases();
  const std::vector<std::string> lines = comparison_summary_lines(compare_backends(rows, kBoth));
  std::string all;
  for (const std::string& l : lines) {
    EXPECT_TRUE(l.starts_with("# ")) << l;
    all += l + "\n";
  }
  EXPECT_TRUE(
      contains(all, "dense     2 cases: time/floor geometric mean 1.732, worst 3.000 (a T=8)"))
      << all;
  EXPECT_TRUE(contains(all, "grouped   3 cases: time/floor geometric mean 1.063, worst 2.000"))
      << all;
  EXPECT_TRUE(contains(all, "; vs dense 0.894")) << all;  // sqrt(1.2 * 2/3)
  EXPECT_TRUE(contains(all, "of the 2 cases that two or more backends ran")) << all;
  EXPECT_TRUE(contains(all, "dense     1: a T=1\n")) << all;
  EXPECT_TRUE(contains(all, "grouped   1: a T=8\n")) << all;
  EXPECT_TRUE(contains(all, "auto picked the fastest in 1 of 2 cases")) << all;
  EXPECT_TRUE(contains(all, "missed a T=8: auto dense, fastest grouped (dense/grouped = 1.500)"))
      << all;
  EXPECT_TRUE(contains(all, "grouped   1 cases: geometric mean 0.500, worst 0.500 (b T=1)")) << all;

  // No auto choice asked: no auto lines.
  std::vector<CaseResult> plain = rows;
  for (CaseResult& r : plain) r.auto_choice.clear();
  std::string none;
  for (const std::string& l : comparison_summary_lines(compare_backends(plain, kBoth))) none += l;
  EXPECT_FALSE(contains(none, "auto")) << none;
}

TEST(BenchCompare, JsonHasBackendAutoChoiceAndTheComparison) {
  BenchRun run;
  run.device_name = "NVIDIA H100 80GB HBM3";
  run.roofline.rates = Roofline{3e12, 7e14};
  run.backend = "dense,grouped";
  run.backends = kBoth;
  run.cases = three_cases();
  run.loads.push_back({"a", 1e9, 2.5, "dense", "bf16"});
  const nlohmann::json j = run_to_json(run);
  EXPECT_EQ(j.at("settings").at("backends"), nlohmann::json(kBoth));
  EXPECT_EQ(j.at("loads").at(0).at("backend"), "dense");
  const nlohmann::json& row0 = j.at("cases").at(0);
  EXPECT_EQ(row0.at("backend"), "dense");
  EXPECT_EQ(row0.at("auto_choice"), "dense");
  EXPECT_EQ(row0.at("auto_reason"), "cost model at T=1");

  const nlohmann::json& cmp = j.at("comparison");
  EXPECT_EQ(cmp.at("ratios_relative_to"), "dense");
  ASSERT_EQ(cmp.at("cases").size(), 3u);
  const nlohmann::json& a8 = cmp.at("cases").at(1);
  EXPECT_EQ(a8.at("model"), "a");
  EXPECT_EQ(a8.at("tokens"), 8);
  EXPECT_NEAR(a8.at("ms").at("grouped").get<double>(), 0.2, 1e-12);
  EXPECT_NEAR(a8.at("vs_first").at("grouped").get<double>(), 0.2 / 0.3, 1e-12);
  EXPECT_NEAR(a8.at("time_over_floor").at("dense").get<double>(), 3.0, 1e-9);
  EXPECT_EQ(a8.at("fastest"), "grouped");
  EXPECT_EQ(a8.at("auto_choice"), "dense");
  EXPECT_EQ(a8.at("auto_is_fastest"), false);
  EXPECT_NEAR(a8.at("auto_over_fastest").get<double>(), 1.5, 1e-12);
  const nlohmann::json& b1 = cmp.at("cases").at(2);
  EXPECT_TRUE(b1.at("ms").at("dense").is_null());
  EXPECT_TRUE(b1.at("fastest").is_null());
  EXPECT_TRUE(b1.at("auto_is_fastest").is_null());

  const nlohmann::json& grouped = cmp.at("per_backend").at(1);
  EXPECT_EQ(grouped.at("backend"), "grouped");
  EXPECT_EQ(grouped.at("summary").at("num_cases"), 3);
  EXPECT_EQ(grouped.at("num_fastest"), 1);
  EXPECT_EQ(grouped.at("fastest_cases").at(0).at("tokens"), 8);
  EXPECT_NEAR(grouped.at("where_auto_picks_it").at("worst_time_over_floor").get<double>(), 0.5,
              1e-9);
  EXPECT_EQ(cmp.at("auto").at("num_cases"), 2);
  EXPECT_EQ(cmp.at("auto").at("misses").at(0).at("fastest"), "grouped");
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);

  // One backend: no comparison, rows still name their backend.
  BenchRun single = run;
  single.backend = "grouped";
  single.backends = {"grouped"};
  single.cases = {row("a", 1, "grouped", 0.1)};
  const nlohmann::json s = run_to_json(single);
  EXPECT_TRUE(s.at("comparison").is_null());
  EXPECT_EQ(s.at("cases").at(0).at("backend"), "grouped");
  EXPECT_TRUE(s.at("cases").at(0).at("auto_choice").is_null());
}

}  // namespace
}  // namespace moe::bench
