// EPLB online mode in the layer, one CPU rank (reference backend; MPI ranks in
// tests/mpi/eplb_online_test.cc, GPUs in tests/gpu_eplb/):
//   - a migration (eplb_request_placement) leaves the layer equal, bit for bit, to the layer
//     without EPLB and to a static layer built with the new placement: every slot that
//     changed holds its new expert's weights, scales and biases, for every quant mode whose
//     tensors register for migration;
//   - a tensor left unregistered (dropped from the registry) leaves stale slots, and the same
//     comparison catches it: the check can fail;
//   - fp8_per_tensor (rank-wide activation scales) is refused with the reason, as are bad
//     options; more spare rows than slots per rank work, too few skip the migration;
//   - the statistics window holds the tokens the router sent to each expert;
//   - on one rank every placement balances equally, so the re-placements are skipped and
//     said (the imbalance gains are tested on MPI ranks).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/compare.h"
#include "core/random.h"
#include "eplb/expert_load.h"
#include "eplb/online_load_balancer.h"
#include "eplb/placement.h"
#include "moe/errors.h"
#include "moe/moe.h"

namespace moe {
namespace {

using testing::bit_identical;
using testing::expect_error;

constexpr int64_t kTokens = 45;  // 2 chunks of max_num_tokens 32

MoeConfig layer_config(QuantMode quant, bool bias = false) {
  MoeConfig config = testing::small_config(16, 4, 256, 128);
  config.max_num_tokens = 32;
  config.quant = quant;
  config.has_expert_biases = bias;
  config.validate();
  return config;
}

/// 24 slots on one rank: every expert once, experts 0..7 twice (the second copies reversed).
std::vector<int32_t> placement_a() {
  std::vector<int32_t> p(24);
  std::iota(p.begin(), p.begin() + 16, 0);
  for (int i = 0; i < 8; ++i) p[16 + i] = 7 - i;
  return p;
}

/// Every slot changes against placement_a: experts rotated, replicas of 8..15 instead.
std::vector<int32_t> placement_b() {
  std::vector<int32_t> p(24);
  for (int i = 0; i < 16; ++i) p[i] = (i + 5) % 16;
  for (int i = 0; i < 8; ++i) p[16 + i] = 8 + (i * 3) % 8;
  return p;
}

/// A third placement: experts rotated by 11, replicas of the odd experts.
std::vector<int32_t> placement_c() {
  std::vector<int32_t> p(24);
  for (int i = 0; i < 16; ++i) p[i] = (i + 11) % 16;
  for (int i = 0; i < 8; ++i) p[16 + i] = 2 * i + 1;
  return p;
}

std::unique_ptr<ConfigurableMoE> make_layer(const MoeConfig& config, WeightSource& weights,
                                            const std::vector<int32_t>& slot_to_expert,
                                            int rebalance_interval = 0, int staging_slots = 0) {
  MoeOptions options;
  options.backend = "reference";
  options.eplb_slot_to_expert = slot_to_expert;
  options.eplb_online.rebalance_interval = rebalance_interval;
  options.eplb_online.staging_slots = staging_slots;
  options.eplb_online.method = "greedy";
  auto layer = create_moe(config, Mapping{}, options).moe;
  layer->load_weights(weights);
  return layer;
}

Tensor run_forward(ConfigurableMoE& layer, const Tensor& x, const TensorView& logits) {
  Tensor out = Tensor::empty({x.size(0), layer.config().hidden_size}, layer.config().act_dtype);
  fill_poison(out);
  layer.forward(x, logits, out);
  return out;
}

class EplbOnlineLayerTest : public ::testing::TestWithParam<QuantMode> {};

TEST_P(EplbOnlineLayerTest, MigratedSlotsEqualFreshlyLoadedOnes) {
  const MoeConfig config = layer_config(GetParam(), /*bias=*/true);
  auto weights = make_random_weights(config, 61);
  auto plain = make_layer(config, *weights, {});
  auto online = make_layer(config, *weights, placement_a(), /*rebalance_interval=*/1000);
  auto fixed_b = make_layer(config, *weights, placement_b());
  const Tensor x = testing::random_x(config, kTokens, 62);
  const Tensor logits = testing::random_routing(config, kTokens, 63, /*hot_expert=*/2).logits;
  const Tensor want = run_forward(*plain, x, logits);
  ASSERT_TRUE(bit_identical(run_forward(*online, x, logits), want)) << "before the migration";

  online->eplb_request_placement(placement_b());
  EXPECT_TRUE(online->eplb_status().migration_pending);
  // The forward that follows the request swaps the staged slots in at its start.
  const Tensor got = run_forward(*online, x, logits);
  const EplbStatus s = online->eplb_status();
  EXPECT_FALSE(s.migration_pending);
  EXPECT_EQ(s.migrations, 1);
  EXPECT_EQ(s.slot_to_expert, placement_b());
  EXPECT_EQ(s.last_slots_moved, 24);
  EXPECT_EQ(s.last_remote_moves, 0);
  EXPECT_GT(s.last_bytes_in, 0);
  EXPECT_EQ(s.support, "supported");
  EXPECT_TRUE(bit_identical(got, want)) << "relative L2 " << relative_l2(got, want);
  EXPECT_TRUE(bit_identical(got, run_forward(*fixed_b, x, logits)));
  // The rows the slots left are free: poisoned, a table still pointing at one would show.
  online->online_load_balancer()->poison_free_rows_for_testing(nullptr);
  EXPECT_TRUE(bit_identical(run_forward(*online, x, logits), want)) << "free rows poisoned";
  // A second migration reads the rows the first one wrote and writes the poisoned ones.
  online->eplb_request_placement(placement_c());
  online->eplb_finish_migration();
  online->online_load_balancer()->poison_free_rows_for_testing(nullptr);
  EXPECT_EQ(online->eplb_status().slot_to_expert, placement_c());
  EXPECT_TRUE(bit_identical(run_forward(*online, x, logits), want)) << "after a second migration";
}

TEST_P(EplbOnlineLayerTest, AnUnregisteredTensorLeavesStaleSlotsThatTheCheckCatches) {
  const MoeConfig config = layer_config(GetParam(), /*bias=*/true);
  auto weights = make_random_weights(config, 64);
  auto plain = make_layer(config, *weights, {});
  const Tensor x = testing::random_x(config, kTokens, 65);
  const Tensor logits = testing::random_routing(config, kTokens, 66).logits;
  const Tensor want = run_forward(*plain, x, logits);
  // Each tensor on its own: leaving any one of them behind must change the output.
  auto probe = make_layer(config, *weights, placement_a(), 1000);
  std::vector<std::string> names;
  for (const ExpertTensor& t : probe->online_load_balancer()->registry().tensors()) {
    names.push_back(t.name);
  }
  ASSERT_GE(names.size(), 6u) << "weights and biases of three projections at least";
  for (const std::string& name : names) {
    SCOPED_TRACE("unregistered: " + name);
    auto online = make_layer(config, *weights, placement_a(), 1000);
    online->online_load_balancer()->drop_tensor_for_testing(name);
    online->eplb_request_placement(placement_b());
    online->eplb_finish_migration();
    const Tensor got = run_forward(*online, x, logits);
    EXPECT_FALSE(bit_identical(got, want)) << "a stale '" << name << "' went unnoticed";
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, EplbOnlineLayerTest,
                         ::testing::Values(QuantMode::kBF16, QuantMode::kFP8Block,
                                           QuantMode::kNVFP4, QuantMode::kMXFP4),
                         [](const ::testing::TestParamInfo<QuantMode>& info) {
                           return std::string(quant_mode_name(info.param));
                         });

TEST(EplbOnlineLayer, Fp8PerTensorIsRefusedWithTheReason) {
  const MoeConfig config = layer_config(QuantMode::kFP8PerTensor);
  MoeOptions options;
  options.backend = "reference";
  options.eplb_online.rebalance_interval = 4;
  expect_error([&] { (void)create_moe(config, Mapping{}, options); },
               {"cannot migrate", "input_scale", "fp8_per_tensor"});
  // Static placements still work for it.
  options.eplb_online = {};
  options.eplb_slot_to_expert = placement_a();
  EXPECT_NO_THROW((void)create_moe(config, Mapping{}, options));
}

TEST(EplbOnlineLayer, BadOptionsAreRefused) {
  const MoeConfig config = layer_config(QuantMode::kBF16);
  auto weights = make_random_weights(config, 67);
  expect_error([&] { make_layer(config, *weights, placement_a(), 10, /*staging_slots=*/-1); },
               {"staging_slots", "-1"});
  {
    // 4 spare rows cannot take a placement that changes all 24 slots: skipped, and said.
    auto small = make_layer(config, *weights, placement_a(), 10, /*staging_slots=*/4);
    small->eplb_request_placement(placement_b());
    const EplbStatus s = small->eplb_status();
    EXPECT_FALSE(s.migration_pending);
    EXPECT_EQ(s.skipped, 1);
    EXPECT_NE(s.last_skip_reason.find("4 staging rows"), std::string::npos) << s.last_skip_reason;
    EXPECT_EQ(s.slot_to_expert, placement_a());
  }
  MoeOptions options;
  options.backend = "reference";
  options.eplb_online.rebalance_interval = 4;
  options.eplb_online.num_slots = 20;
  options.eplb_slot_to_expert = placement_a();
  expect_error([&] { (void)create_moe(config, Mapping{}, options); }, {"num_slots", "24"});
  options.eplb_slot_to_expert.clear();
  options.eplb_online.method = "round-robin";
  expect_error([&] { (void)create_moe(config, Mapping{}, options); }, "round-robin");
  auto plain = make_layer(config, *weights, {});
  expect_error([&] { plain->eplb_request_placement(placement_b()); }, "no EPLB online mode");
  auto online = make_layer(config, *weights, placement_a(), 10);
  expect_error([&] { online->eplb_request_placement({0, 1, 2}); }, {"3 slots", "24"});
  std::vector<int32_t> missing = placement_b();
  std::replace(missing.begin(), missing.end(), 4, 5);
  expect_error([&] { online->eplb_request_placement(missing); }, "expert 4");
  online->eplb_request_placement(placement_b());
  expect_error([&] { online->eplb_request_placement(placement_a()); }, "pending");
}

TEST(EplbOnlineLayer, StagingLargerThanTheSlotsPerRankWritesOnlyLiveSlots) {
  const MoeConfig config = layer_config(QuantMode::kFP8Block);
  auto weights = make_random_weights(config, 68);
  auto plain = make_layer(config, *weights, {});
  auto online = make_layer(config, *weights, placement_a(), 1000, /*staging_slots=*/3 * 24);
  const Tensor x = testing::random_x(config, kTokens, 69);
  const Tensor logits = testing::random_routing(config, kTokens, 70).logits;
  online->eplb_request_placement(placement_b());
  online->eplb_finish_migration();
  // (Out-of-bounds writes would also fail `make sanitize`, which runs this test under ASan.)
  EXPECT_TRUE(bit_identical(run_forward(*online, x, logits), run_forward(*plain, x, logits)));
}

TEST(EplbOnlineLayer, TheWindowCountsRoutedTokensAndOneRankNeverMigrates) {
  const MoeConfig config = layer_config(QuantMode::kBF16);
  auto weights = make_random_weights(config, 71);
  MoeOptions options;
  options.backend = "reference";
  options.eplb_online.rebalance_interval = 3;
  options.eplb_online.window = 8;
  options.eplb_online.num_slots = 24;  // a placement of a uniform load to start with
  auto layer = create_moe(config, Mapping{}, options).moe;
  layer->load_weights(*weights);
  auto plain = make_layer(config, *weights, {});
  EXPECT_EQ(layer->num_slots(), 24);

  std::vector<int64_t> want(config.num_experts, 0);
  for (int f = 0; f < 7; ++f) {
    const Tensor x = testing::random_x(config, kTokens, 80 + f);
    const testing::Routed r = testing::random_routing(config, kTokens, 90 + f, f % 2 ? 5 : -1);
    Tensor ids = Tensor::empty({kTokens, config.top_k}, DType::kI32);
    Tensor w = Tensor::empty({kTokens, config.top_k}, DType::kF32);
    layer->route(x, r.logits, ids, w);
    count_expert_tokens({ids.data_as<const int32_t>(), static_cast<size_t>(ids.numel())}, want);
    EXPECT_TRUE(bit_identical(run_forward(*layer, x, r.logits), run_forward(*plain, x, r.logits)))
        << "forward " << f;
    // Resetting the counters loses nothing the window has not taken yet.
    if (f == 3) layer->reset_expert_token_counts();
  }
  layer->eplb_step();  // folds the last forward's counts
  const ExpertLoadWindow& window = layer->online_load_balancer()->window();
  EXPECT_EQ(std::vector<int64_t>(window.total().begin(), window.total().end()), want);
  const EplbStatus s = layer->eplb_status();
  EXPECT_EQ(s.steps, 8);
  EXPECT_EQ(s.placements, 2);  // at steps 3 and 6
  EXPECT_EQ(s.skipped, 2);
  EXPECT_EQ(s.migrations, 0);
  EXPECT_NE(s.last_skip_reason.find("imbalance"), std::string::npos) << s.last_skip_reason;
}

}  // namespace
}  // namespace moe
