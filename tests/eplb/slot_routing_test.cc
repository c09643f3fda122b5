// Expert id -> slot id routing (the host reference of the device rule): every id lands in one
// of its expert's slots, a hot expert's tokens spread evenly over its replicas, the rule's
// exact values, in-place use on tensors, and the errors.
#include "eplb/slot_routing.h"
#include "common/test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <string>

#include "eplb/expert_load.h"
#include "eplb/placement.h"
#include "moe/errors.h"

namespace moe {
namespace {

using testing::expect_error;

// ids [T, k]: k distinct experts per row, expert `hot` (when >= 0) in every row at a random
// position, the others uniform.
std::vector<int32_t> random_ids(int64_t num_tokens, int top_k, int num_experts, int hot,
                                uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids;
  std::vector<int32_t> experts(num_experts);
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::iota(experts.begin(), experts.end(), 0);
    std::shuffle(experts.begin(), experts.end(), rng);
    if (hot >= 0) {
      std::iter_swap(experts.begin(), std::find(experts.begin(), experts.end(), hot));
      std::swap(experts[0], experts[rng() % top_k]);
    }
    ids.insert(ids.end(), experts.begin(), experts.begin() + top_k);
  }
  return ids;
}

// A placement with replicas of the hot experts of a Zipf load.
SlotTable zipf_table(int num_experts, int num_slots, int num_ranks, uint64_t seed) {
  const std::vector<int64_t> c = zipf_expert_load(num_experts, 50000, 1.2, seed);
  const std::vector<double> load(c.begin(), c.end());
  return place_experts(load, {PlacementMethod::kGreedy, num_slots, num_ranks, 1, 0}).table();
}

TEST(SlotRouting, EveryIdMapsIntoItsExpertsSlots) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    const int num_experts = 32, top_k = 4;
    const SlotTable table = zipf_table(num_experts, 48, 8, seed);
    const std::vector<int32_t> ids = random_ids(513, top_k, num_experts, -1, seed);
    std::vector<int32_t> slots(ids.size(), -7);  // poisoned
    map_experts_to_slots(ids, top_k, table, slots, /*token_offset=*/seed * 100);
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto own = table.slots_of(ids[i]);
      EXPECT_NE(std::find(own.begin(), own.end(), slots[i]), own.end())
          << "entry " << i << ": expert " << ids[i] << " -> slot " << slots[i];
      EXPECT_EQ(table.expert_of(slots[i]), ids[i]);
    }
  }
}

TEST(SlotRouting, ExactRule) {
  // Expert 0 on slots {0, 3, 5}, expert 1 on {1, 4}, expert 2 on {2}.
  const SlotTable table(make_slot_layout(3, 6, 2), {0, 1, 2, 0, 1, 0});
  const std::vector<int32_t> ids = {0, 1,   // t = 0
                                    1, 0,   // t = 1
                                    0, 2,   // t = 2
                                    2, 0};  // t = 3
  // replica = (offset + t + j) % r.
  EXPECT_EQ(map_experts_to_slots(ids, 2, table), (std::vector<int32_t>{0, 4, 4, 5, 5, 2, 2, 3}));
  EXPECT_EQ(map_experts_to_slots(ids, 2, table, /*token_offset=*/1),
            (std::vector<int32_t>{3, 1, 1, 0, 0, 2, 2, 5}));
  for (int64_t t = 0; t < 6; ++t) {
    EXPECT_EQ(slot_for_token(table, 0, t, 0), (std::vector<int32_t>{0, 3, 5})[t % 3]);
  }
}

TEST(SlotRouting, SpreadsAHotExpertEvenlyOverItsReplicas) {
  const int num_experts = 64, top_k = 8, hot = 11;
  for (int replicas : {2, 3, 8}) {
    // The hot expert on `replicas` ranks, every other expert once.
    const int num_ranks = 8;
    std::vector<int32_t> s2e(num_experts);
    std::iota(s2e.begin(), s2e.end(), 0);
    for (int i = 1; i < replicas; ++i) s2e.push_back(hot);
    while (s2e.size() % num_ranks) s2e.push_back(static_cast<int32_t>(s2e.size() % num_experts));
    const SlotTable table(make_slot_layout(num_experts, static_cast<int>(s2e.size()), num_ranks),
                          s2e);
    ASSERT_EQ(table.num_replicas(hot), replicas);
    const int64_t num_tokens = 4096;

    // (a) The hot expert always picked first (r may divide k: the flat index t * k + j would
    // send all of them to one replica): exact round robin.
    std::vector<int32_t> first(num_tokens * top_k);
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int j = 0; j < top_k; ++j)
        first[t * top_k + j] = j == 0 ? hot : (hot + 1 + j) % num_experts;
    }
    // (b) The hot expert at a random position in each row.
    const std::vector<int32_t> random = random_ids(num_tokens, top_k, num_experts, hot, 5);
    for (const auto& [ids, max_over_mean] :
         {std::pair{first, 1.0 + 1e-9}, std::pair{random, 1.1}}) {
      std::map<int32_t, int64_t> per_slot;
      const std::vector<int32_t> slots = map_experts_to_slots(ids, top_k, table);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] == hot) ++per_slot[slots[i]];
      }
      ASSERT_EQ(static_cast<int>(per_slot.size()), replicas) << "a replica got no token";
      int64_t most = 0, total = 0;
      for (const auto& [slot, n] : per_slot) {
        most = std::max(most, n);
        total += n;
      }
      EXPECT_EQ(total, num_tokens);
      const double mean = static_cast<double>(total) / replicas;
      EXPECT_LE(most, max_over_mean * mean + 1) << replicas << " replicas";
    }
  }
}

TEST(SlotRouting, TokenOffsetDecorrelatesRanks) {
  // One decode token per rank, all picking the hot expert: rank r passes token_offset = r.
  const SlotTable table(make_slot_layout(2, 8, 4), {0, 1, 0, 0, 0, 0, 0, 0});
  std::vector<int32_t> chosen;
  for (int64_t rank = 0; rank < 7; ++rank) {
    chosen.push_back(map_experts_to_slots(std::vector<int32_t>{0}, 1, table, rank)[0]);
  }
  std::sort(chosen.begin(), chosen.end());
  EXPECT_EQ(std::unique(chosen.begin(), chosen.end()), chosen.end()) << "ranks collide";
}

TEST(SlotRouting, InPlaceOnTensors) {
  const int num_experts = 16, top_k = 2;
  const SlotTable table = zipf_table(num_experts, 32, 4, 3);
  std::vector<int32_t> ids = random_ids(100, top_k, num_experts, 4, 9);
  const std::vector<int32_t> expected = map_experts_to_slots(ids, top_k, table, 3);
  const TensorView view(ids.data(), DType::kI32, {100, top_k});
  map_experts_to_slots(view, table, view, 3);  // in place, as LoadBalancer::on_routed does
  EXPECT_EQ(ids, expected);

  std::vector<float> wrong(200);
  expect_error(
      [&] {
        map_experts_to_slots(TensorView(wrong.data(), DType::kF32, {100, 2}), table, view);
      },
      "contiguous host i32 [T, k]");
  std::vector<int32_t> short_out(100);
  expect_error(
      [&] {
        map_experts_to_slots(view, table, TensorView(short_out.data(), DType::kI32, {50, 2}));
      },
      "slot_ids");
}

TEST(SlotRouting, BadIdsAndSizesSayWhere) {
  const SlotTable table(make_slot_layout(4, 4, 2), {0, 1, 2, 3});
  std::vector<int32_t> out(6);
  expect_error(
      [&] {
        map_experts_to_slots(std::vector<int32_t>{0, 1, 2, 3, 4, 1}, 2, table, out);
      },
      "expert id 4 at [2, 0]");
  expect_error(
      [&] {
        map_experts_to_slots(std::vector<int32_t>{0, 1, 2, -1, 0, 1}, 2, table, out);
      },
      "expert id -1 at [1, 1]");
  expect_error(
      [&] {
        map_experts_to_slots(std::vector<int32_t>{0, 1, 2, 3, 0}, 2, table);
      },
      "not a whole number of rows");
  expect_error(
      [&] {
        map_experts_to_slots(std::vector<int32_t>{0, 1}, 2, table, out);
      },
      "6 slot ids for 2 expert ids");
  expect_error(
      [&] {
        map_experts_to_slots(std::vector<int32_t>{0, 1}, 0, table);
      },
      "top_k must be >= 1");
}

}  // namespace
}  // namespace moe
