// EPLB static mode on the GPU (grouped backend): the layer given a placement maps routed
// expert ids to slots on the device (eplb/slot_routing_cuda.h) and runs the backend in slot
// space; replicas hold identical weights and the grouped backend sums a token's experts in
// top-k order, so the output must equal the grouped layer's without EPLB bit for bit.
//
// Checked on scaled presets (hidden 256, intermediate 128, top-4: Qwen3-style softmax with 16
// experts, DeepSeek-V3-style grouped routing with 32) in bf16 and fp8_block, for greedy
// placements of a Zipf load with redundant slots and a hot expert (every token to expert 3,
// which has replicas), router logits given and computed on the device:
//   - the output, bit for bit against the layer without EPLB;
//   - the device-side tokens per expert against a host count of the routed ids;
//   - a forward captured in a CUDA graph and replayed on new inputs: each replay bit for bit
//     against the eager layer without EPLB, and the counts of all replays.
// Skips without a Hopper GPU, or where the grouped backend cannot run the layer (its reason).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda_check.h"
#include "eplb/expert_load.h"
#include "eplb/placement.h"
#include "gpu_eplb/eplb_gpu_test_util.h"

namespace moe {
namespace {

using testing::bit_identical;
using testing::copy_tensor;
using testing::poison_device;
using testing::random_routing;
using testing::random_x;
using testing::to_device;
using testing::to_host;

constexpr int kHotExpert = 3;

// Greedy placement of a Zipf load with kHotExpert the heaviest by far.
std::vector<int32_t> greedy_placement(int num_experts, int num_slots, int num_ranks) {
  const std::vector<int64_t> counts = zipf_expert_load(num_experts, 4096, 1.2, 5);
  std::vector<double> load(counts.begin(), counts.end());
  load[kHotExpert] = 3 * *std::max_element(load.begin(), load.end());
  const PlacementRequest request{PlacementMethod::kGreedy, num_slots, num_ranks, 1, 0};
  return place_experts(load, request).slot_to_expert;
}

// Host count of the expert ids the layer's router picks on the device.
std::vector<int64_t> routed_counts(ConfigurableMoE& layer, const Tensor& x_host,
                                   const Tensor& logits_host) {
  const MoeConfig& c = layer.config();
  const int64_t t = x_host.size(0);
  const Tensor x = to_device(x_host);
  const Tensor logits = logits_host.defined() ? to_device(logits_host) : Tensor();
  Tensor ids = Tensor::empty({t, c.top_k}, DType::kI32, Device::cuda(0));
  Tensor weights = Tensor::empty({t, c.top_k}, DType::kF32, Device::cuda(0));
  layer.route(x, logits.defined() ? logits.view() : TensorView(), ids, weights);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  const Tensor ids_host = to_host(ids);
  std::vector<int64_t> counts(c.num_experts, 0);
  count_expert_tokens({ids_host.data_as<const int32_t>(), static_cast<size_t>(t * c.top_k)},
                      counts);
  return counts;
}

using EplbGpuTest = testing::EplbGpuFixture;

TEST_P(EplbGpuTest, EqualsGroupedWithoutEplbAndCountsOnTheDevice) {
  const MoeConfig& c = config_;
  auto w = make_random_weights(c, 81);
  auto plain = testing::make_eplb_layer(c, *w, {});
  const int num_slots = c.num_experts + c.num_experts / 2;
  for (int ranks : {1, 2}) {
    SCOPED_TRACE("placement for " + std::to_string(ranks) + " rank(s)");
    const std::vector<int32_t> placement = greedy_placement(c.num_experts, num_slots, ranks);
    ASSERT_GE(std::count(placement.begin(), placement.end(), kHotExpert), 2);
    auto eplb = testing::make_eplb_layer(c, *w, placement);
    EXPECT_EQ(eplb->num_slots(), num_slots);
    for (int hot : {-1, kHotExpert}) {
      for (int64_t t : {int64_t{1}, int64_t{77}, int64_t{300}}) {
        SCOPED_TRACE("T = " + std::to_string(t) + (hot < 0 ? ", random routing" : ", hot expert"));
        const Tensor x = random_x(c, t, 90 + t);
        const Tensor logits = random_routing(c, t, 91 + t, hot).logits;
        const Tensor want = testing::run_eplb_forward(*plain, x, logits);
        eplb->reset_expert_token_counts();
        const Tensor got = testing::run_eplb_forward(*eplb, x, logits);
        EXPECT_TRUE(bit_identical(got, want)) << "relative L2 " << relative_l2(got, want);
        EXPECT_EQ(eplb->expert_token_counts(), routed_counts(*plain, x, logits));
      }
    }
    // Logits computed on the device from the loaded router weight.
    const Tensor x = random_x(c, 50, 99);
    EXPECT_TRUE(bit_identical(testing::run_eplb_forward(*eplb, x, Tensor()),
                              testing::run_eplb_forward(*plain, x, Tensor())));
  }
}

TEST_P(EplbGpuTest, GraphReplayWithEplb) {
  const MoeConfig& c = config_;
  const int64_t t = 64;
  auto w = make_random_weights(c, 82);
  auto plain = testing::make_eplb_layer(c, *w, {});
  auto eplb =
      testing::make_eplb_layer(c, *w, greedy_placement(c.num_experts, 2 * c.num_experts, 1));

  Tensor x = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
  Tensor logits = Tensor::empty({t, c.num_experts}, DType::kF32, Device::cuda(0));
  Tensor out = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
  copy_tensor(x, random_x(c, t, 1));
  copy_tensor(logits, random_routing(c, t, 1).logits);
  testing::CapturedForward graph(*eplb, x, logits, out);
  cudaStream_t stream = graph.stream();
  eplb->reset_expert_token_counts(stream);
  std::vector<int64_t> expected(c.num_experts, 0);
  for (uint64_t seed : {2, 3, 4}) {
    const int hot = seed == 3 ? kHotExpert : -1;
    const Tensor xh = random_x(c, t, seed);
    const Tensor lh = random_routing(c, t, seed, hot).logits;
    copy_tensor(x, xh);
    copy_tensor(logits, lh);
    poison_device(out);
    graph.replay();
    const Tensor want = testing::run_eplb_forward(*plain, xh, lh);
    const Tensor got = to_host(out);
    EXPECT_TRUE(bit_identical(got, want))
        << "replay of seed " << seed << ", relative L2 " << relative_l2(got, want);
    const std::vector<int64_t> counts = routed_counts(*plain, xh, lh);
    for (int e = 0; e < c.num_experts; ++e) expected[e] += counts[e];
  }
  EXPECT_EQ(eplb->expert_token_counts(stream), expected) << "counts of the three replays";
}

INSTANTIATE_TEST_SUITE_P(Presets, EplbGpuTest, testing::eplb_gpu_cases(),
                         testing::PresetQuantName());

}  // namespace
}  // namespace moe
