// SlotLayout and SlotTable: the index-space conversions, the two-way tables and their
// consistency, and the errors on bad layouts and tables.
#include "eplb/slot_table.h"
#include "common/test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>

#include "moe/errors.h"

namespace moe {
namespace {

using testing::expect_error;

// A random slot -> expert table: every expert once, the spare slots random experts,
// shuffled.
std::vector<int32_t> random_slot_to_expert(int num_experts, int num_slots, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> s2e(num_slots);
  for (int s = 0; s < num_slots; ++s) {
    s2e[s] = s < num_experts ? s : static_cast<int32_t>(rng() % num_experts);
  }
  std::shuffle(s2e.begin(), s2e.end(), rng);
  return s2e;
}

TEST(SlotLayout, ConversionsRoundTrip) {
  const SlotLayout layout = make_slot_layout(/*num_experts=*/10, /*num_slots=*/12, /*num_ranks=*/4);
  EXPECT_EQ(layout.slots_per_rank(), 3);
  for (int s = 0; s < layout.num_slots; ++s) {
    const int rank = layout.rank_of_slot(s);
    const int local = layout.local_slot(s);
    EXPECT_EQ(rank, s / 3);
    EXPECT_GE(local, 0);
    EXPECT_LT(local, 3);
    EXPECT_EQ(layout.global_slot(rank, local), s);
  }
}

TEST(SlotLayout, BadLayoutsSayWhy) {
  expect_error([] { make_slot_layout(8, 10, 4); }, "not divisible by the EP ranks");
  expect_error([] { make_slot_layout(8, 6, 2); }, "every expert needs at least one slot");
  expect_error([] { make_slot_layout(0, 8, 2); }, "num_experts must be >= 1");
  expect_error([] { make_slot_layout(8, 8, 0); }, "EP ranks must be >= 1");
}

TEST(SlotTable, BothDirectionsAgree) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    const int num_experts = 13, num_slots = 40, num_ranks = 5;
    const SlotLayout layout = make_slot_layout(num_experts, num_slots, num_ranks);
    const std::vector<int32_t> s2e = random_slot_to_expert(num_experts, num_slots, seed);
    const SlotTable table(layout, s2e);
    ASSERT_EQ(table.slot_to_expert().size(), static_cast<size_t>(num_slots));
    ASSERT_EQ(table.expert_slot_offsets().size(), static_cast<size_t>(num_experts + 1));
    ASSERT_EQ(table.expert_slots().size(), static_cast<size_t>(num_slots));
    EXPECT_EQ(table.expert_slot_offsets().front(), 0);
    EXPECT_EQ(table.expert_slot_offsets().back(), num_slots);
    std::vector<int> seen(num_slots, 0);
    for (int e = 0; e < num_experts; ++e) {
      const auto slots = table.slots_of(e);
      EXPECT_GE(slots.size(), 1u) << "expert " << e;
      EXPECT_TRUE(std::is_sorted(slots.begin(), slots.end()));
      for (int32_t s : slots) {
        EXPECT_EQ(table.expert_of(s), e);
        EXPECT_EQ(s2e[s], e);
        ++seen[s];
      }
      EXPECT_EQ(static_cast<int>(std::count(s2e.begin(), s2e.end(), e)), table.num_replicas(e));
    }
    for (int s = 0; s < num_slots; ++s) EXPECT_EQ(seen[s], 1) << "slot " << s;
    for (int r = 0; r < num_ranks; ++r) {
      const auto experts = table.rank_experts(r);
      ASSERT_EQ(experts.size(), 8u);
      for (int l = 0; l < 8; ++l) EXPECT_EQ(experts[l], s2e[layout.global_slot(r, l)]);
    }
  }
}

TEST(SlotTable, IdentityIsContiguous) {
  const SlotTable table = SlotTable::identity(make_slot_layout(8, 8, 2));
  for (int s = 0; s < 8; ++s) {
    EXPECT_EQ(table.expert_of(s), s);
    EXPECT_EQ(table.num_replicas(s), 1);
  }
  EXPECT_FALSE(table.has_duplicate_on_rank());
  expect_error([] { SlotTable::identity(make_slot_layout(8, 10, 2)); }, "needs num_slots");
}

TEST(SlotTable, DetectsDuplicatesOnARank) {
  const SlotLayout layout = make_slot_layout(3, 6, 2);
  EXPECT_FALSE(SlotTable(layout, {0, 1, 2, 2, 0, 1}).has_duplicate_on_rank());
  EXPECT_TRUE(SlotTable(layout, {0, 0, 1, 2, 1, 2}).has_duplicate_on_rank());
  EXPECT_TRUE(SlotTable(layout, {0, 1, 2, 2, 1, 1}).has_duplicate_on_rank());
}

TEST(SlotTable, BadTablesSayWhy) {
  const SlotLayout layout = make_slot_layout(3, 4, 2);
  expect_error([&] { SlotTable(layout, {0, 1, 2}); }, "3 entries, expected 4");
  expect_error([&] { SlotTable(layout, {0, 1, 2, 3}); }, "slot 3 holds expert 3");
  expect_error([&] { SlotTable(layout, {0, 1, -1, 2}); }, "slot 2 holds expert -1");
  expect_error([&] { SlotTable(layout, {0, 0, 2, 2}); }, "expert 1 has no slot");
  expect_error([&] { SlotTable(SlotLayout{3, 5, 2}, {0, 1, 2, 0, 1}); }, "not divisible");
}

}  // namespace
}  // namespace moe
