// EPLB online mode, the pure parts (eplb/migration.h): align_placement keeps the experts of
// each rank (up to a relabelling of ranks within a node) and their loads, undoes a pure
// permutation exactly and keeps held experts in their slots; plan_migration lists exactly the
// changed slots with valid, preferably local, evenly spread sources; rank_migration gives
// every rank a consistent share whose simulation on host arrays (payload = expert id) turns
// the current placement into the next one, touching nothing outside the staging entries and
// slots it names.
#include "eplb/migration.h"
#include "common/test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "eplb/expert_load.h"
#include "eplb/placement.h"
#include "moe/errors.h"

namespace moe {
namespace {

using testing::expect_error;

// One layout to test on: E experts, S slots, R ranks in `nodes` nodes.
struct Case {
  int experts;
  int slots;
  int ranks;
  int nodes;
};

// 1 rank; 2/4/8 ranks with and without replicas; 2 nodes.
const std::vector<Case> kCases = {
    {8, 8, 1, 1},   {8, 12, 1, 1},  {16, 16, 2, 1}, {16, 24, 2, 1}, {32, 32, 4, 1},
    {32, 48, 4, 1}, {64, 96, 8, 1}, {16, 24, 4, 2}, {64, 96, 8, 2}, {32, 64, 8, 2},
};

std::string describe(const Case& c) {
  return "E=" + std::to_string(c.experts) + " S=" + std::to_string(c.slots) +
         " R=" + std::to_string(c.ranks) + " nodes=" + std::to_string(c.nodes);
}

std::vector<double> zipf_load(int num_experts, int64_t assignments, double s, uint64_t seed) {
  const std::vector<int64_t> c = zipf_expert_load(num_experts, assignments, s, seed);
  return {c.begin(), c.end()};
}

// A placement of case `c` from a Zipf load drawn from `seed` (hierarchical, which is greedy
// on one node).
Placement zipf_placement(const Case& c, double zipf_s, uint64_t seed) {
  const std::vector<double> load = zipf_load(c.experts, 4096, zipf_s, seed);
  return place_experts(load, {PlacementMethod::kHierarchical, c.slots, c.ranks, c.nodes, 0});
}

// A random slot -> expert table: every expert once, the spare slots random experts, shuffled
// (so a rank may hold two copies of one expert).
std::vector<int32_t> random_slot_to_expert(const Case& c, std::mt19937& rng) {
  std::vector<int32_t> s2e(c.slots);
  for (int s = 0; s < c.slots; ++s) {
    s2e[s] = s < c.experts ? s : static_cast<int32_t>(rng() % c.experts);
  }
  std::shuffle(s2e.begin(), s2e.end(), rng);
  return s2e;
}

SlotLayout layout_of(const Case& c) { return make_slot_layout(c.experts, c.slots, c.ranks); }

// `next` with `n` slots changed at random (to random experts; retried until every expert
// keeps a slot).
std::vector<int32_t> perturb(const Case& c, std::vector<int32_t> s2e, int n, std::mt19937& rng) {
  for (;;) {
    std::vector<int32_t> out = s2e;
    for (int i = 0; i < n; ++i) out[rng() % c.slots] = static_cast<int32_t>(rng() % c.experts);
    std::vector<int> count(c.experts, 0);
    for (int32_t e : out) ++count[e];
    if (std::all_of(count.begin(), count.end(), [](int k) { return k > 0; })) return out;
  }
}

// Permutes ranks within each node and slots within each rank.
std::vector<int32_t> permute_within_nodes(const Case& c, std::span<const int32_t> s2e,
                                          std::mt19937& rng) {
  const int p = c.slots / c.ranks;
  const int ranks_per_node = c.ranks / c.nodes;
  std::vector<int32_t> out(s2e.size());
  for (int n = 0; n < c.nodes; ++n) {
    std::vector<int> order(ranks_per_node);
    std::iota(order.begin(), order.end(), n * ranks_per_node);
    std::shuffle(order.begin(), order.end(), rng);
    for (int i = 0; i < ranks_per_node; ++i) {
      const int to = n * ranks_per_node + i, from = order[i];
      std::vector<int32_t> slots(s2e.begin() + from * p, s2e.begin() + (from + 1) * p);
      std::shuffle(slots.begin(), slots.end(), rng);
      std::copy(slots.begin(), slots.end(), out.begin() + to * p);
    }
  }
  return out;
}

int count_changed(std::span<const int32_t> a, std::span<const int32_t> b) {
  int n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

std::vector<int32_t> sorted_rank(std::span<const int32_t> s2e, int p, int rank) {
  std::vector<int32_t> v(s2e.begin() + rank * p, s2e.begin() + (rank + 1) * p);
  std::sort(v.begin(), v.end());
  return v;
}

// Size of the multiset intersection of two expert lists.
int shared(std::vector<int32_t> a, std::vector<int32_t> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  std::vector<int32_t> both;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
  return static_cast<int>(both.size());
}

// Checks `aligned` against `next` as align_placement promises: a valid table whose ranks
// hold, node by node, exactly next's rank multisets (a bijection), each rank keeping every
// expert it held in its old local slot.
void expect_aligned(const Case& c, const SlotTable& current, std::span<const int32_t> next,
                    std::span<const int32_t> aligned) {
  const int p = c.slots / c.ranks;
  const int ranks_per_node = c.ranks / c.nodes;
  ASSERT_EQ(aligned.size(), next.size());
  const std::vector<int32_t> table(aligned.begin(), aligned.end());
  EXPECT_NO_THROW(SlotTable(current.layout(), table));
  for (int n = 0; n < c.nodes; ++n) {
    std::multiset<std::vector<int32_t>> want, got;
    for (int r = n * ranks_per_node; r < (n + 1) * ranks_per_node; ++r) {
      want.insert(sorted_rank(next, p, r));
      got.insert(sorted_rank(aligned, p, r));
    }
    EXPECT_EQ(got, want) << "node " << n << ": the ranks' expert sets differ from next's";
  }
  for (int r = 0; r < c.ranks; ++r) {
    std::span<const int32_t> old = current.rank_experts(r);
    const std::vector<int32_t> now(aligned.begin() + r * p, aligned.begin() + (r + 1) * p);
    int kept = 0;
    for (int i = 0; i < p; ++i) kept += old[i] == now[i];
    EXPECT_EQ(kept, shared({old.begin(), old.end()}, now))
        << "rank " << r << " moved an expert it already held";
  }
}

// ----------------------------------------------------------------------------------------
// align_placement

TEST(AlignPlacement, IdenticalPlacementNeedsNoMoves) {
  std::mt19937 rng(11);
  for (const Case& c : kCases) {
    SCOPED_TRACE(describe(c));
    const SlotTable current(layout_of(c), random_slot_to_expert(c, rng));
    const std::vector<int32_t> aligned =
        align_placement(current, current.slot_to_expert(), c.nodes);
    EXPECT_TRUE(std::equal(aligned.begin(), aligned.end(), current.slot_to_expert().begin(),
                           current.slot_to_expert().end()));
  }
}

TEST(AlignPlacement, PermutedRanksAndSlotsAlignBackExactly) {
  std::mt19937 rng(12);
  for (const Case& c : kCases) {
    for (int trial = 0; trial < 5; ++trial) {
      SCOPED_TRACE(describe(c) + " trial " + std::to_string(trial));
      // Random tables (duplicates on a rank possible) and real placements.
      const std::vector<int32_t> s2e = trial % 2 == 0
                                           ? random_slot_to_expert(c, rng)
                                           : zipf_placement(c, 1.1, 100 + trial).slot_to_expert;
      const SlotTable current(layout_of(c), s2e);
      const std::vector<int32_t> next = permute_within_nodes(c, s2e, rng);
      const std::vector<int32_t> aligned = align_placement(current, next, c.nodes);
      EXPECT_EQ(aligned, s2e);
      EXPECT_EQ(count_changed(aligned, s2e), 0);
    }
  }
}

TEST(AlignPlacement, ZipfPlacementsKeepRankSetsAndLoads) {
  for (const Case& c : kCases) {
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      SCOPED_TRACE(describe(c) + " seed " + std::to_string(seed));
      const Placement before = zipf_placement(c, 0.8 + 0.1 * seed, seed);
      const double zipf_s = 1.4 - 0.1 * seed;
      const std::vector<double> load = zipf_load(c.experts, 4096, zipf_s, seed + 1000);
      const Placement after =
          place_experts(load, {PlacementMethod::kHierarchical, c.slots, c.ranks, c.nodes, 0});
      const SlotTable current = before.table();
      const std::vector<int32_t> aligned = align_placement(current, after.slot_to_expert, c.nodes);
      expect_aligned(c, current, after.slot_to_expert, aligned);

      const SlotTable aligned_table(current.layout(), aligned);
      std::vector<double> want = after.rank_load, got = rank_loads(load, aligned_table);
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-9);
      EXPECT_NEAR(imbalance(rank_loads(load, aligned_table)), after.imbalance, 1e-12);
      EXPECT_EQ(aligned_table.has_duplicate_on_rank(), after.duplicate_on_rank);

      // Never worse than taking the new placement as it is (the rank matching is optimal).
      const MigrationPlan plain = plan_migration(current, after.table());
      const MigrationPlan plan = plan_migration(current, aligned_table);
      EXPECT_LE(plan.moves.size(), plain.moves.size());
      EXPECT_EQ(static_cast<int>(plan.moves.size()),
                count_changed(current.slot_to_expert(), aligned));

      // Deterministic.
      EXPECT_EQ(align_placement(current, after.slot_to_expert, c.nodes), aligned);
    }
  }
}

TEST(AlignPlacement, RandomTablesKeepRankSets) {
  std::mt19937 rng(13);
  for (const Case& c : kCases) {
    for (int trial = 0; trial < 10; ++trial) {
      SCOPED_TRACE(describe(c) + " trial " + std::to_string(trial));
      const SlotTable current(layout_of(c), random_slot_to_expert(c, rng));
      // A small change of a permuted copy, or an unrelated table.
      const std::vector<int32_t> next =
          trial % 2 == 0
              ? perturb(c, permute_within_nodes(c, current.slot_to_expert(), rng), 3, rng)
              : random_slot_to_expert(c, rng);
      const std::vector<int32_t> aligned = align_placement(current, next, c.nodes);
      expect_aligned(c, current, next, aligned);
      if (trial % 2 == 0) {
        // Three changed slots cost at most three moves once the permutation is undone.
        EXPECT_LE(count_changed(current.slot_to_expert(), aligned), 3);
      }
    }
  }
}

TEST(AlignPlacement, SwappedRanksWithOneChange) {
  // Rank 0 {0, 1, 4}, rank 1 {2, 3, 4}; next has the ranks' sets swapped and one slot of
  // rank 1's set changed (4 -> 0): after aligning, only that slot moves.
  const SlotLayout layout = make_slot_layout(/*num_experts=*/5, /*num_slots=*/6, /*num_ranks=*/2);
  const SlotTable current(layout, {0, 1, 4, 2, 3, 4});
  const std::vector<int32_t> next = {3, 2, 0, 1, 4, 0};
  const std::vector<int32_t> aligned = align_placement(current, next);
  EXPECT_EQ(aligned, (std::vector<int32_t>{0, 1, 4, 2, 3, 0}));
  EXPECT_EQ(count_changed(current.slot_to_expert(), aligned), 1);
}

TEST(AlignPlacement, NodesKeepTheirRankSets) {
  // Two nodes of two ranks; next puts node 1's sets on node 0 and vice versa. With two nodes
  // aligning must not bring them back across the node boundary.
  const SlotLayout layout = make_slot_layout(/*num_experts=*/8, /*num_slots=*/8, /*num_ranks=*/4);
  const SlotTable current(layout, {0, 1, 2, 3, 4, 5, 6, 7});
  const std::vector<int32_t> next = {5, 4, 7, 6, 3, 2, 1, 0};
  EXPECT_EQ(align_placement(current, next, /*num_nodes=*/1),
            (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  const std::vector<int32_t> two_nodes = align_placement(current, next, /*num_nodes=*/2);
  for (int r = 0; r < 2; ++r) {
    for (int32_t e : sorted_rank(two_nodes, 2, r)) EXPECT_GE(e, 4) << "rank " << r;
  }
  for (int r = 2; r < 4; ++r) {
    for (int32_t e : sorted_rank(two_nodes, 2, r)) EXPECT_LT(e, 4) << "rank " << r;
  }
  // Nothing is shared within a node: every slot moves, new ranks go to old ones in order.
  EXPECT_EQ(count_changed(current.slot_to_expert(), two_nodes), 8);
  EXPECT_EQ(two_nodes, next);
}

TEST(AlignPlacement, TiesKeepTheMostSlotsDeterministically) {
  // Old ranks {0, 1}, {2, 3}, {4, 5}; every new rank shares one expert with two old ranks
  // and none with the third: several matchings keep the most (3 slots); the same one is
  // chosen every time.
  const SlotLayout layout = make_slot_layout(/*num_experts=*/6, /*num_slots=*/6, /*num_ranks=*/3);
  const SlotTable current(layout, {0, 1, 2, 3, 4, 5});
  const std::vector<int32_t> next = {2, 4, 0, 5, 1, 3};
  const std::vector<int32_t> aligned = align_placement(current, next);
  EXPECT_EQ(count_changed(current.slot_to_expert(), aligned), 3);
  EXPECT_EQ(align_placement(current, next), aligned);
}

// A greedy rank matching (largest overlap first) keeps fewer slots here than leaving the
// ranks as they are: new rank 0 {1, 0} shares two experts with old rank 3 {0, 1} (as does
// new rank 3), and taking that pair first leaves the other ranks keeping 2 slots where the
// identity keeps 3. The optimal assignment keeps at least as many as any matching.
TEST(AlignPlacement, RankMatchingNeverLosesToIdentity) {
  const SlotLayout layout = make_slot_layout(/*num_experts=*/5, /*num_slots=*/8, /*num_ranks=*/4);
  const SlotTable current(layout, {2, 0, 1, 2, 3, 4, 0, 1});
  const std::vector<int32_t> next = {1, 0, 4, 2, 3, 1, 0, 1};
  const std::vector<int32_t> aligned = align_placement(current, next);
  EXPECT_LE(count_changed(current.slot_to_expert(), aligned),
            count_changed(current.slot_to_expert(), next));
}

TEST(AlignPlacement, SizeMismatchesThrow) {
  const SlotLayout layout = make_slot_layout(/*num_experts=*/8, /*num_slots=*/12, /*num_ranks=*/4);
  std::mt19937 rng(14);
  const Case c{8, 12, 4, 1};
  const SlotTable current(layout, random_slot_to_expert(c, rng));
  const std::vector<int32_t> next(current.slot_to_expert().begin(), current.slot_to_expert().end());
  const std::vector<int32_t> short_next(next.begin(), next.end() - 1);
  std::vector<int32_t> long_next = next;
  long_next.push_back(0);
  expect_error([&] { align_placement(current, short_next); }, {"11", "12"});
  expect_error([&] { align_placement(current, long_next); }, {"13", "12"});
  expect_error([&] { align_placement(current, std::vector<int32_t>{}); }, "slots");
  expect_error([&] { align_placement(current, next, /*num_nodes=*/3); }, "nodes");
  expect_error([&] { align_placement(current, next, /*num_nodes=*/0); }, "nodes");
  EXPECT_NO_THROW(align_placement(current, next, /*num_nodes=*/4));
}

// ----------------------------------------------------------------------------------------
// plan_migration

// Checks `plan` against every promise of plan_migration, recomputing the remote source
// choice (fewest sends so far, ties to the lower slot) independently.
void expect_valid_plan(const SlotTable& current, const SlotTable& next, const MigrationPlan& plan) {
  const SlotLayout& l = current.layout();
  EXPECT_EQ(plan.layout.num_experts, l.num_experts);
  EXPECT_EQ(plan.layout.num_slots, l.num_slots);
  EXPECT_EQ(plan.layout.num_ranks, l.num_ranks);

  std::vector<int> changed;
  for (int s = 0; s < l.num_slots; ++s) {
    if (current.expert_of(s) != next.expert_of(s)) changed.push_back(s);
  }
  ASSERT_EQ(plan.moves.size(), changed.size());

  std::vector<int> sends(l.num_ranks, 0), into(l.num_ranks, 0);
  int remote = 0;
  for (size_t i = 0; i < plan.moves.size(); ++i) {
    const SlotMove& m = plan.moves[i];
    SCOPED_TRACE("move " + std::to_string(i) + " dst " + std::to_string(m.dst));
    if (i > 0) {
      EXPECT_LT(plan.moves[i - 1].dst, m.dst) << "moves not ascending by dst";
    }
    EXPECT_EQ(m.dst, changed[i]);
    EXPECT_EQ(m.expert, next.expert_of(m.dst));
    ASSERT_GE(m.src, 0);
    ASSERT_LT(m.src, l.num_slots);
    EXPECT_EQ(current.expert_of(m.src), m.expert) << "the source does not hold the expert";
    const int dst_rank = l.rank_of_slot(m.dst);
    ++into[dst_rank];
    bool has_local = false;
    for (int s : current.slots_of(m.expert)) has_local |= l.rank_of_slot(s) == dst_rank;
    if (has_local) {
      EXPECT_EQ(l.rank_of_slot(m.src), dst_rank) << "a local source was available";
      continue;
    }
    ++remote;
    int best = -1;
    for (int s : current.slots_of(m.expert)) {
      if (best < 0 || sends[l.rank_of_slot(s)] < sends[l.rank_of_slot(best)]) best = s;
    }
    EXPECT_EQ(m.src, best) << "not the least-used sender";
    ++sends[l.rank_of_slot(m.src)];
  }
  EXPECT_EQ(plan.remote_moves(), remote);
  for (int r = 0; r < l.num_ranks; ++r) EXPECT_EQ(plan.moves_into(r), into[r]) << "rank " << r;
  EXPECT_EQ(plan.max_moves_into_rank(), *std::max_element(into.begin(), into.end()));
}

TEST(PlanMigration, RandomTablesAndPlacements) {
  std::mt19937 rng(21);
  for (const Case& c : kCases) {
    for (int trial = 0; trial < 8; ++trial) {
      SCOPED_TRACE(describe(c) + " trial " + std::to_string(trial));
      const SlotTable current(layout_of(c), trial < 4
                                                ? random_slot_to_expert(c, rng)
                                                : zipf_placement(c, 1.2, trial).slot_to_expert);
      const std::vector<int32_t> raw = trial % 2 == 0
                                           ? random_slot_to_expert(c, rng)
                                           : zipf_placement(c, 0.9, 50 + trial).slot_to_expert;
      const SlotTable next(layout_of(c), align_placement(current, raw, c.nodes));
      const MigrationPlan plan = plan_migration(current, next);
      expect_valid_plan(current, next, plan);
      const SlotTable unaligned(layout_of(c), raw);
      expect_valid_plan(current, unaligned, plan_migration(current, unaligned));
    }
  }
}

TEST(PlanMigration, IdenticalTablesHaveNoMoves) {
  std::mt19937 rng(22);
  for (const Case& c : kCases) {
    SCOPED_TRACE(describe(c));
    const SlotTable current(layout_of(c), random_slot_to_expert(c, rng));
    const MigrationPlan plan = plan_migration(current, current);
    EXPECT_TRUE(plan.moves.empty());
    EXPECT_EQ(plan.remote_moves(), 0);
    EXPECT_EQ(plan.max_moves_into_rank(), 0);
  }
}

TEST(PlanMigration, LocalSourcesAndSpreadSenders) {
  // Rank r holds slots {2r, 2r + 1}. Expert 0 lives on ranks 0 and 1 and must reach ranks 2
  // and 3: the two copies come from different ranks. Expert 3 is already on rank 2 (a local
  // copy); expert 1 on ranks 0 (one send so far) and 2 (none): rank 2 sends.
  const SlotLayout layout = make_slot_layout(/*num_experts=*/4, /*num_slots=*/8, /*num_ranks=*/4);
  const SlotTable current(layout, {0, 1, 0, 2, 3, 1, 2, 3});
  const SlotTable next(layout, {0, 1, 0, 2, 0, 3, 0, 1});
  const MigrationPlan plan = plan_migration(current, next);
  ASSERT_EQ(plan.moves.size(), 4u);
  const std::vector<std::tuple<int, int, int>> want = {
      {4, 0, 0}, {5, 4, 3}, {6, 2, 0}, {7, 5, 1}};  // dst, src, expert
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(plan.moves[i].dst, std::get<0>(want[i])) << "move " << i;
    EXPECT_EQ(plan.moves[i].src, std::get<1>(want[i])) << "move " << i;
    EXPECT_EQ(plan.moves[i].expert, std::get<2>(want[i])) << "move " << i;
  }
  EXPECT_NE(layout.rank_of_slot(plan.moves[0].src), layout.rank_of_slot(plan.moves[2].src));
  EXPECT_EQ(plan.remote_moves(), 3);
  EXPECT_EQ(plan.moves_into(0), 0);
  EXPECT_EQ(plan.moves_into(2), 2);
  EXPECT_EQ(plan.max_moves_into_rank(), 2);
  expect_valid_plan(current, next, plan);
}

TEST(PlanMigration, SwapWithinARankIsLocal) {
  const SlotLayout layout = make_slot_layout(/*num_experts=*/4, /*num_slots=*/4, /*num_ranks=*/2);
  const SlotTable current(layout, {0, 1, 2, 3});
  const SlotTable next(layout, {1, 0, 2, 3});
  const MigrationPlan plan = plan_migration(current, next);
  ASSERT_EQ(plan.moves.size(), 2u);
  EXPECT_EQ(plan.moves[0].src, 1);
  EXPECT_EQ(plan.moves[1].src, 0);
  EXPECT_EQ(plan.remote_moves(), 0);
}

TEST(PlanMigration, DifferentLayoutsThrow) {
  const SlotTable base = SlotTable::identity(make_slot_layout(8, 8, 2));
  const SlotTable more_ranks = SlotTable::identity(make_slot_layout(8, 8, 4));
  const SlotTable more_slots(make_slot_layout(8, 10, 2), {0, 1, 2, 3, 4, 5, 6, 7, 0, 1});
  const SlotTable fewer_experts(make_slot_layout(6, 8, 2), {0, 1, 2, 3, 4, 5, 0, 1});
  expect_error([&] { plan_migration(base, more_ranks); }, {"layouts", "ranks 2/4"});
  expect_error([&] { plan_migration(base, more_slots); }, {"layouts", "slots 8/10"});
  expect_error([&] { plan_migration(base, fewer_experts); }, {"layouts", "experts 8/6"});
  expect_error([&] { plan_migration(more_slots, base); }, "layouts");
}

// ----------------------------------------------------------------------------------------
// rank_migration

constexpr int32_t kGuard = -7777;
constexpr int32_t kPoison = -1;

// Runs the whole migration on host arrays: live[r] [P] holds each slot's expert id as its
// payload. Copies and transfers read only the old live arrays and write staging entries
// (staging_size of them per rank, surrounded by `guard` guard entries each side, poisoned);
// the swap then writes staging entry i into live slot swap_slots[i] of a new live array that
// also has guard entries each side. Returns the new live arrays (without guards) and checks
// that no guard and no staging entry beyond a rank's moves was written.
std::vector<int32_t> simulate(const SlotTable& current, const std::vector<RankMigration>& ranks,
                              int staging_size, int guard) {
  const SlotLayout& l = current.layout();
  const int p = l.slots_per_rank();
  std::vector<std::vector<int32_t>> staging(l.num_ranks), live(l.num_ranks);
  for (int r = 0; r < l.num_ranks; ++r) {
    staging[r].assign(staging_size + 2 * guard, kGuard);
    std::fill(staging[r].begin() + guard, staging[r].begin() + guard + staging_size, kPoison);
    live[r].assign(p + 2 * guard, kGuard);
    std::copy(current.rank_experts(r).begin(), current.rank_experts(r).end(),
              live[r].begin() + guard);
  }
  const std::vector<std::vector<int32_t>> old = live;  // reads come from here only
  auto read_old = [&](int r, int local) {
    EXPECT_GE(local, 0);
    EXPECT_LT(local, p);
    return old[r][guard + local];
  };
  auto write_staging = [&](int r, int entry, int32_t v) {
    EXPECT_GE(entry, 0);
    EXPECT_LT(entry, staging_size);
    EXPECT_EQ(staging[r][guard + entry], kPoison) << "staging entry written twice";
    staging[r][guard + entry] = v;
  };
  for (int r = 0; r < l.num_ranks; ++r) {
    for (const RankMigration::Copy& c : ranks[r].copies) {
      write_staging(r, c.staging, read_old(r, c.src_local));
    }
  }
  // Pairwise: a's sends to b meet b's receives from a in order.
  for (int a = 0; a < l.num_ranks; ++a) {
    for (int b = 0; b < l.num_ranks; ++b) {
      std::vector<int> sent, received;
      for (const RankMigration::Transfer& t : ranks[a].sends)
        if (t.peer == b) sent.push_back(t.local);
      for (const RankMigration::Transfer& t : ranks[b].receives)
        if (t.peer == a) received.push_back(t.local);
      EXPECT_EQ(sent.size(), received.size()) << "ranks " << a << " -> " << b;
      for (size_t i = 0; i < std::min(sent.size(), received.size()); ++i) {
        write_staging(b, received[i], read_old(a, sent[i]));
      }
    }
  }
  std::vector<int32_t> out;
  for (int r = 0; r < l.num_ranks; ++r) {
    const std::vector<int>& swap = ranks[r].swap_slots;
    for (size_t i = 0; i < swap.size(); ++i) {
      EXPECT_GE(swap[i], 0);
      EXPECT_LT(swap[i], p);
      if (swap[i] >= 0 && swap[i] < p) live[r][guard + swap[i]] = staging[r][guard + i];
    }
    for (int i = 0; i < guard; ++i) {
      EXPECT_EQ(live[r][i], kGuard) << "rank " << r << " wrote before its slots";
      EXPECT_EQ(live[r][guard + p + i], kGuard) << "rank " << r << " wrote past its slots";
      EXPECT_EQ(staging[r][i], kGuard) << "rank " << r << " wrote before its staging";
      EXPECT_EQ(staging[r][guard + staging_size + i], kGuard)
          << "rank " << r << " wrote past its staging";
    }
    for (int i = static_cast<int>(swap.size()); i < staging_size; ++i) {
      EXPECT_EQ(staging[r][guard + i], kPoison)
          << "rank " << r << " wrote staging entry " << i << " beyond its moves";
    }
    out.insert(out.end(), live[r].begin() + guard, live[r].begin() + guard + p);
  }
  return out;
}

// Checks each rank's part against the plan and that the parts fit together.
void expect_valid_rank_parts(const MigrationPlan& plan, const std::vector<RankMigration>& ranks) {
  const SlotLayout& l = plan.layout;
  const int p = l.slots_per_rank();
  int total_sends = 0;
  for (int r = 0; r < l.num_ranks; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    const RankMigration& m = ranks[r];
    // The plan's moves into r, in order.
    std::vector<SlotMove> into;
    for (const SlotMove& move : plan.moves)
      if (l.rank_of_slot(move.dst) == r) into.push_back(move);
    ASSERT_EQ(m.swap_slots.size(), into.size());
    EXPECT_EQ(static_cast<int>(m.swap_slots.size()), plan.moves_into(r));
    EXPECT_EQ(m.copies.size() + m.receives.size(), m.swap_slots.size());
    std::set<int> distinct(m.swap_slots.begin(), m.swap_slots.end());
    EXPECT_EQ(distinct.size(), m.swap_slots.size()) << "a local slot swapped twice";
    for (size_t i = 0; i < into.size(); ++i) {
      EXPECT_GE(m.swap_slots[i], 0);
      EXPECT_LT(m.swap_slots[i], p);
      EXPECT_EQ(m.swap_slots[i], l.local_slot(into[i].dst)) << "staging entry " << i;
    }
    // Every staging entry is filled exactly once, by a copy of the right source or a receive
    // from the right rank.
    std::vector<int> filled(into.size(), 0);
    for (const RankMigration::Copy& c : m.copies) {
      ASSERT_GE(c.staging, 0);
      ASSERT_LT(c.staging, static_cast<int>(into.size()));
      ++filled[c.staging];
      EXPECT_EQ(l.global_slot(r, c.src_local), into[c.staging].src);
    }
    for (const RankMigration::Transfer& t : m.receives) {
      ASSERT_GE(t.local, 0);
      ASSERT_LT(t.local, static_cast<int>(into.size()));
      ++filled[t.local];
      EXPECT_NE(t.peer, r);
      EXPECT_EQ(t.peer, l.rank_of_slot(into[t.local].src));
    }
    for (size_t i = 0; i < filled.size(); ++i) EXPECT_EQ(filled[i], 1) << "staging entry " << i;
    for (const RankMigration::Transfer& t : m.sends) {
      EXPECT_NE(t.peer, r);
      EXPECT_GE(t.peer, 0);
      EXPECT_LT(t.peer, l.num_ranks);
      EXPECT_GE(t.local, 0);
      EXPECT_LT(t.local, p);
    }
    total_sends += static_cast<int>(m.sends.size());
  }
  EXPECT_EQ(total_sends, plan.remote_moves());

  // For every pair (a, b): a's sends to b, as global source slots, are the sources of the
  // plan's a -> b moves in plan order, and so are b's receives from a mapped back through
  // b's staging entries.
  for (int a = 0; a < l.num_ranks; ++a) {
    for (int b = 0; b < l.num_ranks; ++b) {
      if (a == b) continue;
      std::vector<int> want, sent, received;
      for (const SlotMove& move : plan.moves) {
        if (l.rank_of_slot(move.src) == a && l.rank_of_slot(move.dst) == b)
          want.push_back(move.src);
      }
      for (const RankMigration::Transfer& t : ranks[a].sends)
        if (t.peer == b) sent.push_back(l.global_slot(a, t.local));
      std::vector<SlotMove> into_b;
      for (const SlotMove& move : plan.moves)
        if (l.rank_of_slot(move.dst) == b) into_b.push_back(move);
      for (const RankMigration::Transfer& t : ranks[b].receives)
        if (t.peer == a) received.push_back(into_b[t.local].src);
      EXPECT_EQ(sent, want) << "sends " << a << " -> " << b;
      EXPECT_EQ(received, want) << "receives " << a << " -> " << b;
    }
  }
}

std::vector<RankMigration> all_ranks(const MigrationPlan& plan) {
  std::vector<RankMigration> out;
  for (int r = 0; r < plan.layout.num_ranks; ++r) out.push_back(rank_migration(plan, r));
  return out;
}

TEST(RankMigration, PartsFitAndSimulationReachesNext) {
  std::mt19937 rng(31);
  for (const Case& c : kCases) {
    for (int trial = 0; trial < 8; ++trial) {
      SCOPED_TRACE(describe(c) + " trial " + std::to_string(trial));
      const SlotTable current(layout_of(c), trial < 4
                                                ? random_slot_to_expert(c, rng)
                                                : zipf_placement(c, 1.3, trial).slot_to_expert);
      std::vector<int32_t> raw = trial % 2 == 0 ? random_slot_to_expert(c, rng)
                                                : zipf_placement(c, 0.7, 70 + trial).slot_to_expert;
      if (trial % 4 == 1) raw = align_placement(current, raw, c.nodes);
      const SlotTable next(layout_of(c), raw);
      const MigrationPlan plan = plan_migration(current, next);
      const std::vector<RankMigration> ranks = all_ranks(plan);
      expect_valid_rank_parts(plan, ranks);
      const int p = c.slots / c.ranks;
      const std::vector<int32_t> result = simulate(current, ranks, p, /*guard=*/0);
      EXPECT_EQ(result, raw);
    }
  }
}

TEST(RankMigration, OneRankIsAllCopies) {
  std::mt19937 rng(32);
  const Case c{8, 12, 1, 1};
  const SlotTable current(layout_of(c), random_slot_to_expert(c, rng));
  std::vector<int32_t> raw = random_slot_to_expert(c, rng);
  const SlotTable next(layout_of(c), raw);
  const MigrationPlan plan = plan_migration(current, next);
  ASSERT_FALSE(plan.moves.empty());
  const RankMigration m = rank_migration(plan, 0);
  EXPECT_TRUE(m.sends.empty());
  EXPECT_TRUE(m.receives.empty());
  EXPECT_EQ(m.copies.size(), plan.moves.size());
  EXPECT_EQ(simulate(current, {m}, c.slots, /*guard=*/0), raw);
}

TEST(RankMigration, SlotsReadAndRewrittenInOneMigration) {
  // A rotation within rank 0 and a swap across ranks: every changed slot is also a source.
  const SlotLayout layout = make_slot_layout(/*num_experts=*/6, /*num_slots=*/6, /*num_ranks=*/2);
  const SlotTable current(layout, {0, 1, 2, 3, 4, 5});
  const std::vector<int32_t> raw = {1, 2, 3, 0, 4, 5};
  const SlotTable next(layout, raw);
  const MigrationPlan plan = plan_migration(current, next);
  ASSERT_EQ(plan.moves.size(), 4u);
  const std::vector<RankMigration> ranks = all_ranks(plan);
  expect_valid_rank_parts(plan, ranks);
  EXPECT_EQ(ranks[0].copies.size(), 2u);
  EXPECT_EQ(ranks[0].receives.size(), 1u);
  EXPECT_EQ(ranks[0].sends.size(), 1u);
  EXPECT_EQ(ranks[1].receives.size(), 1u);
  EXPECT_EQ(ranks[1].sends.size(), 1u);
  EXPECT_EQ(simulate(current, ranks, 3, /*guard=*/0), raw);
}

TEST(RankMigration, LargerStagingSpaceIsTouchedOnlyWhereMovesAre) {
  std::mt19937 rng(33);
  for (const Case& c : kCases) {
    for (int trial = 0; trial < 4; ++trial) {
      SCOPED_TRACE(describe(c) + " trial " + std::to_string(trial));
      const SlotTable current(layout_of(c), random_slot_to_expert(c, rng));
      // Few changes (most staging entries stay unused) or a whole new table.
      const std::vector<int32_t> raw =
          trial < 2 ? perturb(c, {current.slot_to_expert().begin(), current.slot_to_expert().end()},
                              2, rng)
                    : random_slot_to_expert(c, rng);
      const SlotTable next(layout_of(c), raw);
      const MigrationPlan plan = plan_migration(current, next);
      const std::vector<RankMigration> ranks = all_ranks(plan);
      const int p = c.slots / c.ranks;
      EXPECT_EQ(simulate(current, ranks, 2 * p, /*guard=*/5), raw);
    }
  }
}

TEST(RankMigration, RankOutOfRangeThrows) {
  const SlotLayout layout = make_slot_layout(/*num_experts=*/4, /*num_slots=*/8, /*num_ranks=*/4);
  const SlotTable current(layout, {0, 1, 0, 2, 3, 1, 2, 3});
  const SlotTable next(layout, {0, 1, 0, 2, 0, 3, 0, 1});
  const MigrationPlan plan = plan_migration(current, next);
  expect_error([&] { rank_migration(plan, 4); }, {"rank 4", "[0, 4)"});
  expect_error([&] { rank_migration(plan, -1); }, {"rank -1", "[0, 4)"});
  EXPECT_NO_THROW(rank_migration(plan, 3));
}

}  // namespace
}  // namespace moe
