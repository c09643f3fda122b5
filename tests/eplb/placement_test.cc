// EPLB placement (greedy and hierarchical): validity of the tables, balance on Zipf and
// identical loads, permutations when there are no spare slots, duplicates only when
// unavoidable (and then flagged), groups kept within a node, and the errors on bad
// arguments.
#include "eplb/placement.h"
#include "common/test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <string>

#include "eplb/expert_load.h"
#include "moe/errors.h"

namespace moe {
namespace {

using testing::expect_error;

std::vector<double> zipf_load(int num_experts, int64_t assignments, double s, uint64_t seed) {
  const std::vector<int64_t> c = zipf_expert_load(num_experts, assignments, s, seed);
  return {c.begin(), c.end()};
}

std::vector<double> random_load(int num_experts, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 100.0);
  std::vector<double> load(num_experts);
  for (double& x : load) x = u(rng);
  return load;
}

PlacementRequest greedy(int slots, int ranks) {
  return {PlacementMethod::kGreedy, slots, ranks, 1, 0};
}
PlacementRequest hierarchical(int slots, int ranks, int nodes, int groups) {
  return {PlacementMethod::kHierarchical, slots, ranks, nodes, groups};
}

// Every slot holds a valid expert, every expert has a slot, every rank slots_per_rank slots,
// the tables agree, and the loads and imbalances are those of the tables.
void expect_valid(const Placement& p, const std::vector<double>& load, const PlacementRequest& r) {
  const int num_experts = static_cast<int>(load.size());
  ASSERT_EQ(p.layout.num_experts, num_experts);
  ASSERT_EQ(p.layout.num_slots, r.num_slots);
  ASSERT_EQ(p.layout.num_ranks, r.num_ranks);
  ASSERT_EQ(p.slot_to_expert.size(), static_cast<size_t>(r.num_slots));
  std::vector<int> replicas(num_experts, 0);
  for (int32_t e : p.slot_to_expert) {
    ASSERT_GE(e, 0);
    ASSERT_LT(e, num_experts);
    ++replicas[e];
  }
  for (int e = 0; e < num_experts; ++e)
    EXPECT_GE(replicas[e], 1) << "expert " << e << " has no slot";

  const SlotTable table = p.table();
  int slots_seen = 0;
  for (int rank = 0; rank < r.num_ranks; ++rank) {
    EXPECT_EQ(static_cast<int>(table.rank_experts(rank).size()), r.num_slots / r.num_ranks);
    slots_seen += static_cast<int>(table.rank_experts(rank).size());
  }
  EXPECT_EQ(slots_seen, r.num_slots);
  for (int e = 0; e < num_experts; ++e) {
    EXPECT_EQ(table.num_replicas(e), replicas[e]);
    for (int32_t s : table.slots_of(e)) EXPECT_EQ(p.slot_to_expert[s], e);
  }

  const std::vector<double> expected = rank_loads(load, table);
  ASSERT_EQ(p.rank_load.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(p.rank_load[i], expected[i], 1e-9);
  const double total = std::accumulate(load.begin(), load.end(), 0.0);
  EXPECT_NEAR(std::accumulate(p.rank_load.begin(), p.rank_load.end(), 0.0), total, 1e-6 * total);
  EXPECT_NEAR(p.imbalance, imbalance(p.rank_load), 1e-12);
  EXPECT_NEAR(p.imbalance_before, imbalance(contiguous_rank_loads(load, r.num_ranks)), 1e-12);
  EXPECT_EQ(p.duplicate_on_rank, table.has_duplicate_on_rank());
  EXPECT_EQ(p.duplicate_on_rank, !p.warnings.empty());
}

// The requests the property tests run on: (experts, slots, ranks, nodes, groups), both methods
// where they apply.
std::vector<std::pair<int, PlacementRequest>> sizes() {
  return {
      {64, greedy(64, 8)},
      {64, greedy(80, 8)},
      {64, greedy(96, 16)},
      {64, greedy(128, 32)},
      {60, greedy(72, 6)},
      {256, greedy(320, 8)},
      {64, hierarchical(64, 8, 1, 0)},
      {64, hierarchical(96, 8, 2, 8)},
      {64, hierarchical(96, 16, 4, 8)},
      {64, hierarchical(80, 8, 4, 0)},
      {256, hierarchical(320, 64, 8, 8)},
  };
}

TEST(Placement, ValidOnZipfAndRandomLoads) {
  for (const auto& [num_experts, request] : sizes()) {
    for (uint64_t seed : {1u, 2u, 3u}) {
      SCOPED_TRACE(::testing::Message()
                   << placement_method_name(request.method) << " E " << num_experts << " S "
                   << request.num_slots << " R " << request.num_ranks << " nodes "
                   << request.num_nodes << " seed " << seed);
      for (const std::vector<double>& load :
           {zipf_load(num_experts, 32768, 1.0, seed), random_load(num_experts, seed)}) {
        const Placement p = place_experts(load, request);
        expect_valid(p, load, request);
        EXPECT_FALSE(p.duplicate_on_rank) << (p.warnings.empty() ? "" : p.warnings[0]);
      }
    }
  }
}

TEST(Placement, ImbalanceAfterIsNoWorseThanBeforeOnZipf) {
  for (const auto& [num_experts, request] : sizes()) {
    for (double s : {0.6, 1.0, 1.4}) {
      for (uint64_t seed : {1u, 2u, 3u, 4u}) {
        const std::vector<double> load = zipf_load(num_experts, 32768, s, seed);
        const Placement p = place_experts(load, request);
        EXPECT_LE(p.imbalance, p.imbalance_before + 1e-12)
            << placement_method_name(request.method) << " E " << num_experts << " S "
            << request.num_slots << " R " << request.num_ranks << " s " << s << " seed " << seed;
        EXPECT_GE(p.imbalance, 1.0 - 1e-12);
      }
    }
  }
}

TEST(Placement, SpareSlotsLowerTheImbalance) {
  // Zipf(1.0), 256 experts, 4096 tokens x top-8: replicas bring 8 ranks close to even.
  for (uint64_t seed : {1u, 2u, 3u}) {
    const std::vector<double> load = zipf_load(256, 4096 * 8, 1.0, seed);
    const Placement none = place_experts(load, greedy(256, 8));
    const Placement some = place_experts(load, greedy(288, 8));
    const Placement more = place_experts(load, greedy(320, 8));
    EXPECT_GT(none.imbalance, 1.2) << "the hottest expert alone exceeds a rank's mean";
    EXPECT_LT(some.imbalance, none.imbalance);
    EXPECT_LE(more.imbalance, some.imbalance + 1e-12);
    EXPECT_LE(more.imbalance, 1.05) << "the issue's target at 64 redundant slots, 8 ranks";
  }
}

TEST(Placement, IdenticalLoadsGiveImbalanceOne) {
  const std::vector<std::pair<int, PlacementRequest>> cases = {
      {64, greedy(64, 8)},
      {256, greedy(288, 8)},
      {256, greedy(320, 64)},
      {64, greedy(128, 16)},
      {64, hierarchical(64, 8, 2, 8)},
      {256, hierarchical(320, 64, 8, 8)},
      {256, hierarchical(288, 8, 2, 0)},
  };
  for (const auto& [num_experts, request] : cases) {
    const std::vector<double> load(num_experts, 37.0);
    const Placement p = place_experts(load, request);
    expect_valid(p, load, request);
    EXPECT_NEAR(p.imbalance, 1.0, 1e-12)
        << placement_method_name(request.method) << " E " << num_experts << " S "
        << request.num_slots << " R " << request.num_ranks;
    EXPECT_NEAR(p.imbalance_before, 1.0, 1e-12);
  }
  // All zero: nothing to balance, imbalance 1 by definition.
  const std::vector<double> zero(16, 0.0);
  const Placement z = place_experts(zero, greedy(24, 4));
  expect_valid(z, zero, greedy(24, 4));
  EXPECT_EQ(z.imbalance, 1.0);
}

TEST(Placement, NoSpareSlotsGivesAPermutation) {
  for (const PlacementRequest& request :
       {greedy(64, 8), hierarchical(64, 8, 1, 0), hierarchical(64, 8, 4, 16)}) {
    for (uint64_t seed : {1u, 2u}) {
      const std::vector<double> load = zipf_load(64, 10000, 1.2, seed);
      const Placement p = place_experts(load, request);
      std::vector<int32_t> sorted = p.slot_to_expert;
      std::sort(sorted.begin(), sorted.end());
      std::vector<int32_t> iota(64);
      std::iota(iota.begin(), iota.end(), 0);
      EXPECT_EQ(sorted, iota) << placement_method_name(request.method);
      EXPECT_FALSE(p.duplicate_on_rank);
    }
  }
  // The "before" loads are exactly those of the identity table.
  const std::vector<double> load = zipf_load(64, 10000, 1.0, 9);
  const std::vector<double> identity =
      rank_loads(load, SlotTable::identity(make_slot_layout(64, 64, 8)));
  const Placement p = place_experts(load, greedy(64, 8));
  for (int r = 0; r < 8; ++r) EXPECT_DOUBLE_EQ(p.rank_load_before[r], identity[r]);
}

TEST(Placement, NoDuplicatesWhenAvoidable) {
  // Tight cases: a rank's slots equal (or nearly) the experts of its scope, where a plain
  // greedy order runs into a rank that already holds the expert.
  const std::vector<std::pair<int, PlacementRequest>> cases = {
      {4, greedy(8, 2)},
      {6, greedy(12, 2)},
      {5, greedy(15, 3)},
      {8, greedy(24, 4)},
      {16, greedy(64, 4)},
      {8, greedy(56, 8)},
      {8, hierarchical(16, 4, 2, 4)},
      {16, hierarchical(48, 6, 2, 4)},
      {12, hierarchical(24, 6, 3, 0)},
  };
  for (const auto& [num_experts, request] : cases) {
    for (uint32_t seed = 1; seed <= 20; ++seed) {
      for (const std::vector<double>& load :
           {random_load(num_experts, seed), zipf_load(num_experts, 5000, 1.5, seed)}) {
        const Placement p = place_experts(load, request);
        expect_valid(p, load, request);
        const SlotTable table = p.table();
        for (int r = 0; r < request.num_ranks; ++r) {
          const auto experts = table.rank_experts(r);
          const std::set<int32_t> distinct(experts.begin(), experts.end());
          EXPECT_EQ(distinct.size(), experts.size())
              << placement_method_name(request.method) << " E " << num_experts << " S "
              << request.num_slots << " R " << request.num_ranks << " seed " << seed << " rank "
              << r;
        }
        EXPECT_FALSE(p.duplicate_on_rank);
      }
    }
  }
}

TEST(Placement, UnavoidableDuplicatesAreFlagged) {
  // 6 slots per rank, 4 experts (per node): some rank must hold an expert twice.
  const std::vector<std::pair<int, PlacementRequest>> cases = {
      {4, greedy(12, 2)}, {8, hierarchical(24, 4, 2, 2)},  // 4 experts per node, 6 slots per rank
  };
  for (const auto& [num_experts, request] : cases) {
    const std::vector<double> load = random_load(num_experts, 5);
    const Placement p = place_experts(load, request);
    expect_valid(p, load, request);
    EXPECT_TRUE(p.duplicate_on_rank);
    ASSERT_EQ(p.warnings.size(), 1u);
    EXPECT_NE(p.warnings[0].find("unavoidable"), std::string::npos) << p.warnings[0];
  }
}

TEST(Placement, HierarchicalKeepsEachGroupWithinANode) {
  const int num_experts = 64, num_groups = 8, num_nodes = 4, num_ranks = 16;
  for (int num_slots : {64, 96, 128}) {
    for (uint64_t seed : {1u, 2u, 3u}) {
      const std::vector<double> load = zipf_load(num_experts, 20000, 1.0, seed);
      const PlacementRequest request = hierarchical(num_slots, num_ranks, num_nodes, num_groups);
      const Placement p = place_experts(load, request);
      expect_valid(p, load, request);
      const SlotTable table = p.table();
      const int ranks_per_node = num_ranks / num_nodes;
      const int group_size = num_experts / num_groups;
      std::vector<int> groups_on_node(num_nodes, 0);
      for (int g = 0; g < num_groups; ++g) {
        std::set<int> nodes;
        for (int e = g * group_size; e < (g + 1) * group_size; ++e) {
          for (int32_t s : table.slots_of(e)) {
            nodes.insert(p.layout.rank_of_slot(s) / ranks_per_node);
          }
        }
        ASSERT_EQ(nodes.size(), 1u) << "group " << g << " spans nodes, slots " << num_slots;
        ++groups_on_node[*nodes.begin()];
      }
      for (int n = 0; n < num_nodes; ++n) EXPECT_EQ(groups_on_node[n], num_groups / num_nodes);
    }
  }
}

TEST(Placement, HierarchicalOnOneNodeIsGreedy) {
  for (uint64_t seed : {1u, 2u}) {
    const std::vector<double> load = zipf_load(256, 32768, 1.0, seed);
    const Placement h = place_experts(load, hierarchical(320, 8, 1, 8));
    const Placement g = place_experts(load, greedy(320, 8));
    EXPECT_EQ(h.slot_to_expert, g.slot_to_expert);
    EXPECT_EQ(h.imbalance, g.imbalance);
  }
}

TEST(Placement, ReplicatesTheHottestExperts) {
  // Expert 5 carries about half the load: it gets a copy on every rank and no more (a fifth
  // copy could not lower any rank's load); the last spare slot goes to the next hottest.
  std::vector<double> load(16, 10.0);
  load[5] = 160.0;
  load[9] = 40.0;
  const Placement p = place_experts(load, greedy(20, 4));
  const SlotTable table = p.table();
  EXPECT_EQ(table.num_replicas(5), 4);
  EXPECT_EQ(table.num_replicas(9), 2);
  for (int e = 0; e < 16; ++e) {
    if (e != 5 && e != 9) {
      EXPECT_EQ(table.num_replicas(e), 1) << "expert " << e;
    }
  }
  EXPECT_LT(p.imbalance, p.imbalance_before);
  EXPECT_FALSE(p.duplicate_on_rank);
}

TEST(Placement, Deterministic) {
  const std::vector<double> load = random_load(64, 17);
  for (const PlacementRequest& request : {greedy(96, 8), hierarchical(96, 8, 2, 8)}) {
    const Placement a = place_experts(load, request), b = place_experts(load, request);
    EXPECT_EQ(a.slot_to_expert, b.slot_to_expert);
    EXPECT_EQ(a.rank_load, b.rank_load);
  }
}

TEST(PackReplicas, SwapsInsteadOfDoublingUp) {
  // Rank 0 takes the heavy expert 0, rank 1 fills with experts 2, 3, 4; the two copies of
  // expert 1 then find room only on rank 0. A copy of 2, 3 or 4 moves over instead of
  // expert 1 doubling up on rank 0.
  const std::vector<double> load = {100, 10, 20, 20, 20};
  const std::vector<int> counts = {1, 2, 1, 1, 1};
  const std::vector<int32_t> s2e = pack_replicas(load, counts, 2);
  ASSERT_EQ(s2e.size(), 6u);
  const SlotTable table(make_slot_layout(5, 6, 2), s2e);
  EXPECT_FALSE(table.has_duplicate_on_rank());
  for (int r = 0; r < 2; ++r) {
    const auto experts = table.rank_experts(r);
    EXPECT_EQ(std::count(experts.begin(), experts.end(), 1), 1) << "rank " << r;
    EXPECT_TRUE(std::is_sorted(experts.begin(), experts.end()));
  }
  // Every copy of a count is placed.
  for (int e = 0; e < 5; ++e) EXPECT_EQ(table.num_replicas(e), counts[e]);
}

TEST(PackReplicas, RandomCountsNeverDoubleUpWhenAvoidable) {
  // Random counts (each <= ranks), not only those replicate_experts would choose: the swap
  // path is what keeps copies apart here.
  std::mt19937 rng(21);
  int cases = 0;
  for (int it = 0; it < 3000; ++it) {
    const int num_ranks = 2 + static_cast<int>(rng() % 5);
    const int slots_per_rank = 1 + static_cast<int>(rng() % 5);
    const int num_slots = num_ranks * slots_per_rank;
    std::vector<int> counts;
    for (int left = num_slots; left > 0;) {
      const int c = std::min(left, 1 + static_cast<int>(rng() % num_ranks));
      counts.push_back(c);
      left -= c;
    }
    const int num_experts = static_cast<int>(counts.size());
    if (slots_per_rank > num_experts) continue;
    std::vector<double> load(num_experts);
    for (double& x : load) x = rng() % 4 == 0 ? 1000.0 * (rng() % 100) : rng() % 50;
    const std::vector<int32_t> s2e = pack_replicas(load, counts, num_ranks);
    const SlotTable table(make_slot_layout(num_experts, num_slots, num_ranks), s2e);
    ASSERT_FALSE(table.has_duplicate_on_rank()) << "iteration " << it;
    for (int e = 0; e < num_experts; ++e) ASSERT_EQ(table.num_replicas(e), counts[e]);
    ++cases;
  }
  EXPECT_GT(cases, 1000);
}

TEST(PackReplicas, BadArgumentsSayWhy) {
  const std::vector<double> load = {1, 2, 3};
  expect_error([&] { pack_replicas(load, std::vector<int>{1, 1}, 1); }, "2 replica counts for 3");
  expect_error(
      [&] {
        pack_replicas(load, std::vector<int>{1, 1, 1}, 2);
      },
      "3 replicas do not fill 2 ranks evenly");
  expect_error([&] { pack_replicas(load, std::vector<int>{1, -1, 1}, 1); }, "negative count");
  expect_error([&] { replicate_experts(load, 2, 1); }, "2 slots for 3 experts");
  expect_error([&] { replicate_experts(load, 4, 0); }, "max_replicas must be >= 1");
  // Highest load per replica first: 3 -> 3/2, 2 -> 2/2, 3/2 -> 3/3.
  EXPECT_EQ(replicate_experts(load, 6, 3), (std::vector<int>{1, 2, 3}));
  // At most 2 each, until every expert has 2.
  EXPECT_EQ(replicate_experts(load, 6, 2), (std::vector<int>{2, 2, 2}));
  EXPECT_EQ(replicate_experts(load, 7, 2), (std::vector<int>{2, 2, 3}));
}

TEST(Placement, BadArgumentsSayWhy) {
  const std::vector<double> load(64, 1.0);
  expect_error([&] { place_experts(load, greedy(100, 8)); }, "not divisible by the EP ranks");
  expect_error([&] { place_experts(load, greedy(56, 8)); }, "every expert needs at least one slot");
  expect_error([&] { place_experts(load, hierarchical(96, 8, 3, 0)); },
               "num_ranks (8) is not divisible by num_nodes (3)");
  expect_error([&] { place_experts(load, hierarchical(96, 8, 4, 2)); },
               "num_groups (2) is not divisible by num_nodes (4)");
  expect_error([&] { place_experts(load, hierarchical(96, 8, 2, 6)); },
               "num_experts (64) is not divisible by num_groups (6)");
  expect_error([&] { place_experts(load, greedy(96, 0)); }, "EP ranks must be >= 1");
  expect_error(
      [&] {
        place_experts(load, {PlacementMethod::kGreedy, 96, 8, 2, 0});
      },
      "has no nodes");
  expect_error([&] { place_experts(load, hierarchical(96, 8, 0, 0)); }, "num_nodes must be >= 1");
  std::vector<double> bad = load;
  bad[3] = -1.0;
  expect_error([&] { place_experts(bad, greedy(64, 8)); }, "load of expert 3");
  bad[3] = std::nan("");
  expect_error([&] { place_experts(bad, greedy(64, 8)); }, "load of expert 3");
  expect_error([] { place_experts({}, greedy(64, 8)); }, "no experts");
  EXPECT_EQ(parse_placement_method("greedy"), PlacementMethod::kGreedy);
  EXPECT_EQ(parse_placement_method("hierarchical"), PlacementMethod::kHierarchical);
  expect_error([] { parse_placement_method("lpt"); }, "choices: hierarchical, greedy");
}

}  // namespace
}  // namespace moe
