// EPLB online mode on one GPU (grouped backend; two GPUs in tests/gpu_comm/ep_nccl_test.cc):
//   - a migration (eplb_request_placement + eplb_finish_migration) leaves the layer equal, bit
//     for bit, to the grouped layer without EPLB: every changed slot holds its new expert's
//     W13, W2 (and fp8_block's S13, S2); leaving any one registered tensor out makes the same
//     check fail;
//   - a CUDA graph captured before the migration stays valid: replayed after it (tables and
//     weights updated in place), it matches the layer without EPLB, and stepping between
//     replays (eplb_step) folds every replay's tokens into the statistics window;
//   - fp8_per_tensor is refused with the reason.
// Skips without a Hopper GPU, or where the grouped backend cannot run the layer (its reason).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda_check.h"
#include "eplb/online_load_balancer.h"
#include "gpu_eplb/eplb_gpu_test_util.h"

namespace moe {
namespace {

using testing::bit_identical;
using testing::copy_tensor;
using testing::poison_device;
using testing::random_routing;
using testing::random_x;
using testing::to_host;

/// 1.5 E slots on one rank: every expert once, then experts 0.. again (reversed).
std::vector<int32_t> placement_a(int e) {
  std::vector<int32_t> p(e + e / 2);
  std::iota(p.begin(), p.begin() + e, 0);
  for (int i = 0; i < e / 2; ++i) p[e + i] = e / 2 - 1 - i;
  return p;
}

/// Every slot changes against placement_a: experts rotated, the upper half replicated.
std::vector<int32_t> placement_b(int e) {
  std::vector<int32_t> p(e + e / 2);
  for (int i = 0; i < e; ++i) p[i] = (i + 5) % e;
  for (int i = 0; i < e / 2; ++i) p[e + i] = e / 2 + (i * 3) % (e / 2);
  return p;
}

using EplbOnlineGpuTest = testing::EplbGpuFixture;

TEST_P(EplbOnlineGpuTest, MigratedSlotsEqualLoadedOnesAndEveryTensorCounts) {
  const MoeConfig& c = config_;
  auto w = make_random_weights(c, 83);
  auto plain = testing::make_eplb_layer(c, *w, {}, false);
  const int64_t t = 77;
  const Tensor x = random_x(c, t, 84);
  const Tensor logits = random_routing(c, t, 85, /*hot_expert=*/c.num_experts - 1).logits;
  const Tensor want = testing::run_eplb_forward(*plain, x, logits);

  auto online = testing::make_eplb_layer(c, *w, placement_a(c.num_experts), true);
  ASSERT_TRUE(bit_identical(testing::run_eplb_forward(*online, x, logits), want))
      << "before the migration";
  online->eplb_request_placement(placement_b(c.num_experts));
  online->eplb_finish_migration();
  const EplbStatus s = online->eplb_status();
  EXPECT_EQ(s.migrations, 1);
  EXPECT_EQ(s.slot_to_expert, placement_b(c.num_experts));
  EXPECT_EQ(s.support, "supported");
  online->online_load_balancer()->poison_free_rows_for_testing(nullptr);
  const Tensor got = testing::run_eplb_forward(*online, x, logits);
  EXPECT_TRUE(bit_identical(got, want)) << "relative L2 " << relative_l2(got, want);

  std::vector<std::string> names;
  for (const ExpertTensor& tensor : online->online_load_balancer()->registry().tensors()) {
    names.push_back(tensor.name);
  }
  EXPECT_EQ(names.size(), c.quant == QuantMode::kFP8Block ? 4u : 2u);
  for (const std::string& name : names) {
    SCOPED_TRACE("unregistered: " + name);
    auto stale = testing::make_eplb_layer(c, *w, placement_a(c.num_experts), true);
    stale->online_load_balancer()->drop_tensor_for_testing(name);
    stale->eplb_request_placement(placement_b(c.num_experts));
    stale->eplb_finish_migration();
    EXPECT_FALSE(bit_identical(testing::run_eplb_forward(*stale, x, logits), want))
        << "a stale '" << name << "' went unnoticed";
  }
}

TEST_P(EplbOnlineGpuTest, GraphCapturedBeforeAMigrationReplaysAfterIt) {
  const MoeConfig& c = config_;
  const int64_t t = 64;
  auto w = make_random_weights(c, 86);
  auto plain = testing::make_eplb_layer(c, *w, {}, false);
  auto online = testing::make_eplb_layer(c, *w, placement_a(c.num_experts), true);
  Tensor x = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
  Tensor logits = Tensor::empty({t, c.num_experts}, DType::kF32, Device::cuda(0));
  Tensor out = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
  copy_tensor(x, random_x(c, t, 1));
  copy_tensor(logits, random_routing(c, t, 1).logits);
  // Captured before the migration; online mode's host work is skipped while capturing.
  testing::CapturedForward graph(*online, x, logits, out);
  cudaStream_t stream = graph.stream();

  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("replay " + std::to_string(round));
    if (round == 3) {  // migrate between replays: the graph's buffers stay where they were
      online->eplb_request_placement(placement_b(c.num_experts), stream);
      online->eplb_finish_migration(stream);
      // The rows the slots left, poisoned: replays that still used them would show NaNs.
      online->online_load_balancer()->poison_free_rows_for_testing(stream);
    }
    const Tensor xh = random_x(c, t, 10 + round);
    const Tensor lh = random_routing(c, t, 20 + round, round % 2 ? 2 : -1).logits;
    copy_tensor(x, xh);
    copy_tensor(logits, lh);
    poison_device(out);
    graph.replay();
    online->eplb_step(stream);
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
    const Tensor got = to_host(out);
    const Tensor want = testing::run_eplb_forward(*plain, xh, lh);
    EXPECT_TRUE(bit_identical(got, want)) << "relative L2 " << relative_l2(got, want);
  }
  EXPECT_EQ(online->eplb_status().slot_to_expert, placement_b(c.num_experts));
  // One more step folds the last snapshot: the window then holds every routed token.
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  online->eplb_step(stream);
  const ExpertLoadWindow& window = online->online_load_balancer()->window();
  EXPECT_EQ(std::vector<int64_t>(window.total().begin(), window.total().end()),
            online->expert_token_counts(stream));
}

INSTANTIATE_TEST_SUITE_P(Presets, EplbOnlineGpuTest, testing::eplb_gpu_cases(),
                         testing::PresetQuantName());

TEST(EplbOnlineGpu, Fp8PerTensorIsRefusedWithTheReason) {
  MOE_REQUIRE_HOPPER();
  MoeConfig c = testing::scaled("qwen3-30b-a3b");
  c.quant = QuantMode::kFP8PerTensor;
  MoeOptions options;
  options.backend = "grouped";
  options.eplb_online.rebalance_interval = 4;
  testing::expect_error([&] { (void)create_moe(c, {}, options); },
                        {"cannot migrate", "input_scale"});
}

}  // namespace
}  // namespace moe
