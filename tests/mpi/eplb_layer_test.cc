// EPLB static mode under expert parallelism on CPU ranks (reference backend, every MPI
// strategy): a layer of Mapping{ep, rank} given a placement works in slot space (rank r holds
// slots [r * S/ep, (r + 1) * S/ep)) and must give what the single-process layer WITHOUT EPLB
// gives. Every rank builds the same inputs and weights from one seed and runs its share of
// the tokens, as in ep_layer_test.cc.
//
// The comparison, as ep_layer_test.cc's:
//   - top-1 layers: bit for bit (a token's one expert is computed on one rank, whichever
//     replica it goes to; the other ranks add exact zeros);
//   - top-2 layers: within kExpertParallel = 1e-6 relative L2 (a token's experts may sit on
//     different ranks, so only the order of the double additions differs).
// Placements (16 slots for 8 experts: 8 per rank at ep 2, 4 at ep 4):
//   - greedy from a Zipf load with expert 3 hot (it gets a replica on every rank);
//   - "idle": expert 3 only on rank 0, the other ranks holding the other experts and their
//     replicas; with every token sent to expert 3 at top-1, ranks > 0 compute nothing.
// Token shares: uneven (T not divisible by ep), or every token on rank 0 (the others run
// zero-token chunks). The tokens per expert, summed over the ranks, must equal a host count
// of the routed ids.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/compare.h"
#include "core/random.h"
#include "eplb/expert_load.h"
#include "eplb/placement.h"
#include "moe/moe.h"
#include "mpi/mpi_test_util.h"

namespace moe {
namespace {

using mpi_test::Slice;
using testing::bit_identical;

constexpr double kExpertParallel = 1e-6;
constexpr int kHotExpert = 3;
constexpr int kNumExperts = 8;
constexpr int kNumSlots = 16;

enum class Placed { kGreedy, kIdle };
enum class Routing { kRandom, kHot };
enum class Tokens { kUneven, kAllOnRank0 };

struct Case {
  std::string name;
  std::string strategy;
  int ep;  // 0: the world size
  int top_k = 2;
  Placed placed = Placed::kGreedy;
  Routing routing = Routing::kRandom;
  Tokens tokens = Tokens::kUneven;
  QuantMode quant = QuantMode::kBF16;
  int64_t total = 29;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.strategy + "_" + info.param.name + "_ep" + std::to_string(info.param.ep);
}

MoeConfig layer_config(const Case& c) {
  MoeConfig config = testing::small_config(kNumExperts, c.top_k, 256, 128);
  config.max_num_tokens = 16;  // several chunks per rank
  config.quant = c.quant;
  config.validate();
  return config;
}

// Global slot -> expert [kNumSlots] for `ep` ranks.
std::vector<int32_t> make_placement(Placed placed, int ep) {
  if (placed == Placed::kGreedy) {
    const std::vector<int64_t> counts = zipf_expert_load(kNumExperts, 2048, 1.0, 3);
    std::vector<double> load(counts.begin(), counts.end());
    load[kHotExpert] = 4 * *std::max_element(load.begin(), load.end());
    const PlacementRequest request{PlacementMethod::kGreedy, kNumSlots, ep, 1, 0};
    return place_experts(load, request).slot_to_expert;
  }
  // Idle: rank 0 holds expert 3 and the first experts after it, the other slots cycle over
  // the experts other than 3.
  std::vector<int32_t> others;
  for (int e = 0; e < kNumExperts; ++e) {
    if (e != kHotExpert) others.push_back(e);
  }
  std::vector<int32_t> slot_to_expert(kNumSlots);
  slot_to_expert[0] = kHotExpert;
  for (int s = 1; s < kNumSlots; ++s) slot_to_expert[s] = others[(s - 1) % others.size()];
  return slot_to_expert;
}

class EplbEpLayerTest : public ::testing::TestWithParam<Case> {};

TEST_P(EplbEpLayerTest, MatchesOneRankWithoutEplb) {
  const Case& c = GetParam();
  std::string why_not;
  const std::optional<mpi_test::EpGroup> group = mpi_test::ep_group(c.ep, &why_not);
  if (!group) GTEST_SKIP() << why_not;
  const int world = group->world, rank = group->rank, ep = group->ep, ep_rank = group->ep_rank;
  const MoeConfig config = layer_config(c);
  const int64_t total = c.total;
  const Tensor x = testing::random_x(config, total, 17);
  const int hot = c.routing == Routing::kHot ? kHotExpert : -1;
  const Tensor logits = testing::random_routing(config, total, 18, hot).logits;  // [T, E]
  auto weights = make_random_weights(config, 19);
  const std::vector<int32_t> placement = make_placement(c.placed, ep);
  ASSERT_GE(std::count(placement.begin(), placement.end(), kHotExpert),
            c.placed == Placed::kGreedy ? 2 : 1);

  // One rank, all tokens, no EPLB.
  const mpi_test::SingleRank single = mpi_test::run_single_rank(config, *weights, x, logits);
  const Tensor& ref = single.out;
  std::vector<int64_t> expected_counts(kNumExperts, 0);
  count_expert_tokens(
      {single.ids.data_as<const int32_t>(), static_cast<size_t>(single.ids.numel())},
      expected_counts);

  // Expert parallel with EPLB: this rank's share.
  const Slice slice = mpi_test::token_slice(total, *group, c.tokens == Tokens::kAllOnRank0);
  MoeOptions options;
  options.backend = "reference";
  options.communication = c.strategy;
  options.eplb_slot_to_expert = placement;
  auto result = create_moe(config, Mapping{ep, ep_rank}, options);
  ASSERT_EQ(result.report.communication, c.strategy) << result.report.str();
  ConfigurableMoE& layer = *result.moe;
  EXPECT_EQ(layer.num_slots(), kNumSlots);
  layer.load_weights(*weights);
  const TensorView x_mine = x.view().slice_rows(slice.begin, slice.end);
  const TensorView logits_mine = logits.view().slice_rows(slice.begin, slice.end);
  const Tensor out = mpi_test::forward_poisoned(layer, x_mine, logits_mine);
  // Tokens per expert of this forward, summed over the world (each group of ep ranks routes
  // all T tokens once).
  std::vector<int64_t> counts = layer.expert_token_counts();
  ASSERT_EQ(counts.size(), static_cast<size_t>(kNumExperts));
  std::vector<int64_t> summed(kNumExperts, 0);
  MPI_Allreduce(counts.data(), summed.data(), kNumExperts, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  // A second forward on the same layer: the exchange leaves no state behind.
  const Tensor again = mpi_test::forward_poisoned(layer, x_mine, logits_mine);

  for (int64_t& n : expected_counts) n *= world / ep;
  EXPECT_EQ(summed, expected_counts) << "rank " << rank << ": tokens per expert over the ranks";
  const TensorView ref_mine = ref.view().slice_rows(slice.begin, slice.end);
  EXPECT_TRUE(bit_identical(again, out)) << "rank " << rank << ": second forward differs";
  if (config.top_k == 1) {
    EXPECT_TRUE(bit_identical(out, ref_mine))
        << "rank " << rank << ": top-1, relative L2 " << relative_l2(out, ref_mine);
  } else if (slice.size() > 0) {
    EXPECT_LE(relative_l2(out, ref_mine), kExpertParallel)
        << "rank " << rank << " vs the single-rank layer without EPLB";
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const char* strategy : {"allgather_reducescatter", "alltoall", "one_sided"}) {
    for (int ep : {0, 2}) {
      all.push_back({"replicas", strategy, ep});
      all.push_back({"hot_expert", strategy, ep, 2, Placed::kGreedy, Routing::kHot});
      all.push_back(
          {"hot_expert_top1", strategy, ep, 1, Placed::kGreedy, Routing::kHot, Tokens::kUneven});
      all.push_back({"replicas_top1", strategy, ep, 1, Placed::kGreedy, Routing::kRandom,
                     Tokens::kUneven, QuantMode::kBF16, 23});
      all.push_back({"idle_ranks_top1", strategy, ep, 1, Placed::kIdle, Routing::kHot});
      all.push_back({"zero_token_ranks", strategy, ep, 2, Placed::kGreedy, Routing::kHot,
                     Tokens::kAllOnRank0, QuantMode::kBF16, 21});
      all.push_back({"fp8_block", strategy, ep, 2, Placed::kGreedy, Routing::kRandom,
                     Tokens::kUneven, QuantMode::kFP8Block, 19});
    }
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Strategies, EplbEpLayerTest, ::testing::ValuesIn(cases()), case_name);

}  // namespace
}  // namespace moe
