// EPLB online mode under expert parallelism on CPU ranks (reference backend, every MPI
// strategy): the statistics summed over the ranks drive a re-placement whose weights move
// between ranks (MPI send/recv on the balancer's own communicator), and every forward --
// before, during and after the migration -- gives what the single-process layer without EPLB
// gives (top-2: within 1e-6 relative L2, the order of double additions being the only
// difference; see eplb_layer_test.cc).
//
//   - statistics-driven: 8 experts in 12 slots, a uniform first placement (experts 0..3
//     replicated), then every token's first choice is expert 5: the re-placement after three
//     forwards gives expert 5 replicas, lowers the imbalance, and moves slots across ranks;
//     every rank ends with the same placement;
//   - a requested placement that sends every slot to another rank (bf16 and fp8_block);
//   - the same with one tensor dropped from the registry: some rank sees a stale slot.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/compare.h"
#include "eplb/online_load_balancer.h"
#include "moe/moe.h"
#include "mpi/mpi_test_util.h"

namespace moe {
namespace {

using mpi_test::Slice;

constexpr double kExpertParallel = 1e-6;
constexpr int kNumExperts = 8;
constexpr int kNumSlots = 12;
constexpr int kHotExpert = 5;
constexpr int64_t kTokens = 37;

struct Case {
  std::string strategy;
  int ep;  // 0: the world size
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.strategy + "_ep" + std::to_string(info.param.ep);
}

MoeConfig layer_config(QuantMode quant) {
  MoeConfig config = testing::small_config(kNumExperts, 2, 256, 128);
  config.max_num_tokens = 16;  // several chunks per rank
  config.quant = quant;
  config.validate();
  return config;
}

std::unique_ptr<ConfigurableMoE> make_online_layer(const MoeConfig& config, const Case& c,
                                                   const mpi_test::EpGroup& g,
                                                   WeightSource& weights) {
  MoeOptions options;
  options.backend = "reference";
  options.communication = c.strategy;
  options.eplb_online.rebalance_interval = 3;
  options.eplb_online.num_slots = kNumSlots;
  options.eplb_online.method = "greedy";
  auto result = create_moe(config, Mapping{g.ep, g.ep_rank}, options);
  EXPECT_EQ(result.report.communication, c.strategy) << result.report.str();
  result.moe->load_weights(weights);
  return std::move(result.moe);
}

/// Every rank's placement equals rank 0's.
bool same_on_every_rank(const std::vector<int32_t>& placement) {
  std::vector<int32_t> first = placement;
  MPI_Bcast(first.data(), static_cast<int>(first.size()), MPI_INT32_T, 0, MPI_COMM_WORLD);
  return mpi_test::all_ranks(first == placement);
}

class EplbOnlineEpTest : public ::testing::TestWithParam<Case> {};

TEST_P(EplbOnlineEpTest, StatisticsDriveAMigrationAndTheOutputStays) {
  const Case& c = GetParam();
  std::string why_not;
  const std::optional<mpi_test::EpGroup> group = mpi_test::ep_group(c.ep, &why_not);
  if (!group) GTEST_SKIP() << why_not;
  const MoeConfig config = layer_config(QuantMode::kBF16);
  auto weights = make_random_weights(config, 31);
  auto layer = make_online_layer(config, c, *group, *weights);
  const EplbStatus start = layer->eplb_status();
  ASSERT_EQ(std::count(start.slot_to_expert.begin(), start.slot_to_expert.end(), kHotExpert), 1);

  const Slice slice = mpi_test::token_slice(kTokens, *group, false);
  for (int f = 0; f < 7; ++f) {
    SCOPED_TRACE("forward " + std::to_string(f));
    // Rows left by a migration hold stale experts: poisoned, a stale table would show.
    if (!layer->eplb_status().migration_pending) {
      layer->online_load_balancer()->poison_free_rows_for_testing(nullptr);
    }
    const Tensor x = testing::random_x(config, kTokens, 40 + f);
    const Tensor logits = testing::random_routing(config, kTokens, 50 + f, kHotExpert).logits;
    const Tensor ref = mpi_test::run_single_rank(config, *weights, x, logits).out;
    const Tensor out =
        mpi_test::forward_poisoned(*layer, x.view().slice_rows(slice.begin, slice.end),
                                   logits.view().slice_rows(slice.begin, slice.end));
    if (slice.size() > 0) {
      EXPECT_LE(relative_l2(out, ref.view().slice_rows(slice.begin, slice.end)), kExpertParallel)
          << "rank " << group->rank;
    }
  }
  const EplbStatus s = layer->eplb_status();
  EXPECT_EQ(s.steps, 7);
  EXPECT_EQ(s.placements, 2);  // at steps 3 and 6
  EXPECT_GE(s.migrations, 1);
  EXPECT_LT(s.last_imbalance_after, s.last_imbalance_before);
  EXPECT_GT(s.last_remote_moves, 0);
  EXPECT_GE(std::count(s.slot_to_expert.begin(), s.slot_to_expert.end(), kHotExpert), 2)
      << "the hot expert got no replica";
  EXPECT_TRUE(same_on_every_rank(s.slot_to_expert));
}

TEST_P(EplbOnlineEpTest, EverySlotMovesToAnotherRank) {
  const Case& c = GetParam();
  std::string why_not;
  const std::optional<mpi_test::EpGroup> group = mpi_test::ep_group(c.ep, &why_not);
  if (!group) GTEST_SKIP() << why_not;
  for (QuantMode quant : {QuantMode::kBF16, QuantMode::kFP8Block}) {
    SCOPED_TRACE(std::string(quant_mode_name(quant)));
    const MoeConfig config = layer_config(quant);
    auto weights = make_random_weights(config, 32);
    const Tensor x = testing::random_x(config, kTokens, 33);
    const Tensor logits = testing::random_routing(config, kTokens, 34).logits;
    const Tensor ref = mpi_test::run_single_rank(config, *weights, x, logits).out;
    const Slice slice = mpi_test::token_slice(kTokens, *group, false);
    const TensorView x_mine = x.view().slice_rows(slice.begin, slice.end);
    const TensorView logits_mine = logits.view().slice_rows(slice.begin, slice.end);
    const TensorView ref_mine = ref.view().slice_rows(slice.begin, slice.end);
    // Slot s takes the expert of slot s + slots per rank: every slot's expert crosses ranks.
    const int per_rank = kNumSlots / group->ep;
    for (bool drop : {false, true}) {
      SCOPED_TRACE(drop ? "down.weight unregistered" : "every tensor registered");
      auto layer = make_online_layer(config, c, *group, *weights);
      const std::vector<int32_t> before = layer->eplb_status().slot_to_expert;
      std::vector<int32_t> rotated(kNumSlots);
      for (int s = 0; s < kNumSlots; ++s) rotated[s] = before[(s + per_rank) % kNumSlots];
      if (drop) layer->online_load_balancer()->drop_tensor_for_testing("down.weight");
      layer->eplb_request_placement(rotated);
      layer->eplb_finish_migration();
      layer->online_load_balancer()->poison_free_rows_for_testing(nullptr);
      const EplbStatus s = layer->eplb_status();
      EXPECT_EQ(s.slot_to_expert, rotated);
      EXPECT_GT(s.last_remote_moves, 0);
      const Tensor out = mpi_test::forward_poisoned(*layer, x_mine, logits_mine);
      const bool close = slice.size() == 0 || relative_l2(out, ref_mine) <= kExpertParallel;
      if (!drop) {
        EXPECT_TRUE(close) << "rank " << group->rank << ": relative L2 "
                           << relative_l2(out, ref_mine);
      } else {
        EXPECT_FALSE(mpi_test::all_ranks(close)) << "a stale down projection went unnoticed";
      }
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const char* strategy : {"allgather_reducescatter", "alltoall", "one_sided"}) {
    for (int ep : {0, 2}) all.push_back({strategy, ep});
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Strategies, EplbOnlineEpTest, ::testing::ValuesIn(cases()), case_name);

}  // namespace
}  // namespace moe
