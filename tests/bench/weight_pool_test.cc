// The benchmark's pooled weight source (bench/harness/weight_pool.h): routed expert e reads
// expert e mod N of the random source, byte for byte, views stay valid across calls, and the
// router tensors and the shared MLP pass through.
#include "bench/harness/weight_pool.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "moe/errors.h"
#include "moe/moe.h"

namespace moe::bench {
namespace {

MoeConfig small_deepseek() {
  MoeConfig c = preset("deepseek-v3");
  c.hidden_size = 64;
  c.intermediate_size = 32;
  c.shared_intermediate_size = 32;
  c.num_experts = 16;
  c.routing.num_groups = 4;
  c.routing.topk_groups = 2;
  c.top_k = 4;
  c.validate();
  return c;
}

std::vector<char> bytes_of(const TensorView& v) {
  const auto* p = static_cast<const char*>(v.data());
  return {p, p + v.nbytes()};
}

TEST(WeightPool, ExpertsRepeatThePoolByteForByte) {
  const MoeConfig c = small_deepseek();
  auto reference = make_random_weights(c, 5);
  auto pooled = make_pooled_weights(make_random_weights(c, 5), c.num_experts, 3);
  for (int e = 0; e < c.num_experts; ++e) {
    for (Proj p : {Proj::kGate, Proj::kUp, Proj::kDown}) {
      const std::vector<char> got = bytes_of(pooled->expert_tensor(e, p, Part::kWeight));
      const std::vector<char> want = bytes_of(reference->expert_tensor(e % 3, p, Part::kWeight));
      ASSERT_FALSE(want.empty());
      EXPECT_EQ(got, want) << "expert " << e << " " << proj_name(p);
    }
  }
  // Expert 0 and expert 1 differ (the pool holds distinct experts).
  EXPECT_NE(bytes_of(pooled->expert_tensor(0, Proj::kGate, Part::kWeight)),
            bytes_of(pooled->expert_tensor(1, Proj::kGate, Part::kWeight)));
  // The shared MLP and the router tensors pass through.
  EXPECT_EQ(bytes_of(pooled->expert_tensor(kSharedExpert, Proj::kDown, Part::kWeight)),
            bytes_of(reference->expert_tensor(kSharedExpert, Proj::kDown, Part::kWeight)));
  EXPECT_EQ(bytes_of(pooled->correction_bias()), bytes_of(reference->correction_bias()));
  EXPECT_EQ(bytes_of(pooled->router_weight()), bytes_of(reference->router_weight()));
  // A part the source does not have stays empty.
  EXPECT_TRUE(pooled->expert_tensor(2, Proj::kGate, Part::kBias).empty());
}

TEST(WeightPool, ViewsStayValidAcrossCalls) {
  const MoeConfig c = small_deepseek();
  auto pooled = make_pooled_weights(make_random_weights(c, 6), c.num_experts, 2);
  const TensorView first = pooled->expert_tensor(4, Proj::kUp, Part::kWeight);
  const std::vector<char> before = bytes_of(first);
  for (int e = 0; e < c.num_experts; ++e) pooled->expert_tensor(e, Proj::kDown, Part::kWeight);
  EXPECT_EQ(bytes_of(first), before);
}

TEST(WeightPool, LoadsALayerWhoseOutputMatchesTheSameWeightsSpelledOut) {
  MoeConfig c = preset("qwen3-30b-a3b");
  c.hidden_size = 64;
  c.intermediate_size = 32;
  c.num_experts = 8;
  c.top_k = 2;
  c.max_num_tokens = 16;
  c.validate();
  MoeOptions o;
  o.backend = "reference";
  auto a = create_moe(c, {}, o).moe;
  a->load_weights(*make_pooled_weights(make_random_weights(c, 7), c.num_experts, 8));
  auto b = create_moe(c, {}, o).moe;
  b->load_weights(*make_random_weights(c, 7));  // pool == E: the same weights
  Tensor x = Tensor::empty({5, 64}, DType::kBF16);
  for (int i = 0; i < 5 * 64; ++i) x.data_as<uint16_t>()[i] = 0x3F80 + (i * 37 % 128);  // ~1..2
  Tensor ya = Tensor::empty({5, 64}, DType::kBF16), yb = Tensor::empty({5, 64}, DType::kBF16);
  a->forward(x, {}, ya);
  b->forward(x, {}, yb);
  EXPECT_EQ(std::memcmp(ya.data(), yb.data(), ya.nbytes()), 0);
}

TEST(WeightPool, RejectsABadPool) {
  const MoeConfig c = small_deepseek();
  EXPECT_THROW(make_pooled_weights(make_random_weights(c, 1), c.num_experts, 0), Error);
  EXPECT_THROW(make_pooled_weights(make_random_weights(c, 1), c.num_experts, 17), Error);
  auto pooled = make_pooled_weights(make_random_weights(c, 1), c.num_experts, 4);
  EXPECT_THROW(pooled->expert_tensor(16, Proj::kGate, Part::kWeight), Error);
}

}  // namespace
}  // namespace moe::bench
