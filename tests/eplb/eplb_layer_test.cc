// EPLB static mode in the layer (CPU, reference backend): a layer given a placement
// (MoeOptions::eplb_slot_to_expert) runs in slot space, each slot holding a copy of its
// expert's weights, and must give the same output as the layer without EPLB, bit for bit:
// replicas hold identical weights and the reference backend sums a token's experts in top-k
// order, so moving a token's expert to another replica changes nothing.
//
// Checked, for bf16 and fp8_block weights, on a softmax-top-k layer (16 experts, top-4) and a
// DeepSeek-V3-style grouped layer (32 experts in 8 groups, top-4, a shared expert):
//   - greedy placements of a Zipf load with redundant slots (E -> 1.5 E) made for 1 rank and
//     for 2 ranks, both run on one rank; random routing and a hot expert (all, or nearly all,
//     tokens to expert 3, which has replicas), over several chunks;
//   - the identity placement and a permutation (num_slots == num_experts);
//   - expert_token_counts against a host count of the routed ids (accumulating, reset);
//   - route() still returns expert ids;
//   - read_eplb_placement: the file round trip and its errors, naming the file and field.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/compare.h"
#include "core/random.h"
#include "eplb/expert_load.h"
#include "eplb/placement.h"
#include "moe/errors.h"
#include "moe/moe.h"

namespace moe {
namespace {

using testing::expect_error;
using testing::expect_error_containing;

namespace fs = std::filesystem;
using testing::bit_identical;

constexpr int kHotExpert = 3;
constexpr int64_t kTokens = 77;  // 3 chunks of max_num_tokens 32, the last one partial

// A file in the temp directory, removed when the test ends.
struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& name)
      : path(fs::temp_directory_path() /
             ("moe_eplb_layer_" + std::to_string(::getpid()) + "_" + name)) {}
  ~TempFile() { fs::remove(path); }
  void write(const std::string& text) const { std::ofstream(path) << text; }
  std::string str() const { return path.string(); }
};

enum class Family { kSoftmax, kDeepSeekV3 };

struct LayerCase {
  Family family;
  QuantMode quant;
};

std::string case_name(const ::testing::TestParamInfo<LayerCase>& info) {
  return std::string(info.param.family == Family::kSoftmax ? "softmax_e16" : "deepseek_v3_e32") +
         "_" + std::string(quant_mode_name(info.param.quant));
}

// The gpu suites' scaled presets: hidden 256, intermediate 128, top-4.
MoeConfig layer_config(const LayerCase& c) {
  MoeConfig config;
  if (c.family == Family::kSoftmax) {
    config = testing::small_config(16, 4, 256, 128);
  } else {
    config = preset("deepseek-v3");
    config.hidden_size = 256;
    config.intermediate_size = 128;
    config.num_experts = 4 * config.routing.num_groups;  // 32 in 8 groups
    config.top_k = 4;
    config.shared_intermediate_size = 128;
  }
  config.max_num_tokens = 32;
  config.quant = c.quant;
  config.validate();
  return config;
}

// A Zipf load over the experts with kHotExpert the heaviest by far.
std::vector<double> skewed_load(int num_experts, uint64_t seed) {
  const std::vector<int64_t> counts = zipf_expert_load(num_experts, 4096, 1.2, seed);
  std::vector<double> load(counts.begin(), counts.end());
  load[kHotExpert] = 3 * *std::max_element(load.begin(), load.end());
  return load;
}

std::vector<int32_t> greedy_placement(int num_experts, int num_slots, int num_ranks) {
  const PlacementRequest request{PlacementMethod::kGreedy, num_slots, num_ranks, 1, 0};
  return place_experts(skewed_load(num_experts, 5), request).slot_to_expert;
}

int replicas_of(const std::vector<int32_t>& slot_to_expert, int expert) {
  return static_cast<int>(std::count(slot_to_expert.begin(), slot_to_expert.end(), expert));
}

std::unique_ptr<ConfigurableMoE> make_layer(const MoeConfig& config, WeightSource& weights,
                                            const std::vector<int32_t>& slot_to_expert,
                                            bool count = false) {
  MoeOptions options;
  options.backend = "reference";
  options.eplb_slot_to_expert = slot_to_expert;
  options.count_expert_load = count;
  auto layer = create_moe(config, Mapping{}, options).moe;
  layer->load_weights(weights);
  return layer;
}

// Router logits [T, E]: N(0, 1), + 50 on `hot` when >= 0 (every token picks it under softmax
// routing, nearly every one under DeepSeek-V3's, whose correction bias also counts).
Tensor make_logits(const MoeConfig& config, int64_t tokens, uint64_t seed, int hot) {
  return testing::random_routing(config, tokens, seed, hot).logits;
}

Tensor run_forward(ConfigurableMoE& layer, const Tensor& x, const TensorView& logits) {
  Tensor out = Tensor::empty({x.size(0), layer.config().hidden_size}, layer.config().act_dtype);
  fill_poison(out);
  layer.forward(x, logits, out);
  return out;
}

// Expert ids [T, k] the layer's router picks.
Tensor route_ids(ConfigurableMoE& layer, const Tensor& x, const Tensor& logits) {
  Tensor ids = Tensor::empty({x.size(0), layer.config().top_k}, DType::kI32);
  Tensor weights = Tensor::empty({x.size(0), layer.config().top_k}, DType::kF32);
  layer.route(x, logits, ids, weights);
  return ids;
}

std::vector<int64_t> host_counts(const Tensor& ids, int num_experts) {
  std::vector<int64_t> counts(num_experts, 0);
  count_expert_tokens({ids.data_as<const int32_t>(), static_cast<size_t>(ids.numel())}, counts);
  return counts;
}

class EplbLayerTest : public ::testing::TestWithParam<LayerCase> {};

TEST_P(EplbLayerTest, EqualsTheLayerWithoutEplb) {
  const MoeConfig config = layer_config(GetParam());
  const int num_experts = config.num_experts;
  auto weights = make_random_weights(config, 21);
  auto plain = make_layer(config, *weights, {});
  ASSERT_EQ(plain->num_slots(), num_experts);

  struct Named {
    std::string name;
    std::vector<int32_t> slot_to_expert;
  };
  const int num_slots = num_experts + num_experts / 2;  // 16 -> 24, 32 -> 48
  const std::vector<Named> placements = {
      {"greedy for 1 rank", greedy_placement(num_experts, num_slots, 1)},
      {"greedy for 2 ranks", greedy_placement(num_experts, num_slots, 2)}};
  for (const Named& p : placements) {
    SCOPED_TRACE(p.name);
    ASSERT_GE(replicas_of(p.slot_to_expert, kHotExpert), 2) << "the hot expert has no replica";
    auto eplb = make_layer(config, *weights, p.slot_to_expert);
    EXPECT_EQ(eplb->num_slots(), num_slots);
    for (int hot : {-1, kHotExpert}) {
      SCOPED_TRACE(hot < 0 ? "random routing" : "every token to the hot expert");
      const Tensor x = testing::random_x(config, kTokens, 31 + hot);
      const Tensor logits = make_logits(config, kTokens, 41 + hot, hot);
      const Tensor want = run_forward(*plain, x, logits);
      const Tensor got = run_forward(*eplb, x, logits);
      EXPECT_TRUE(bit_identical(got, want)) << "relative L2 " << relative_l2(got, want);
      // Again: the layer keeps no state between forwards.
      EXPECT_TRUE(bit_identical(run_forward(*eplb, x, logits), want)) << "second forward";
    }
  }
}

TEST_P(EplbLayerTest, RouterLogitsFromTheLoadedWeightAndEdgeTokenCounts) {
  const MoeConfig config = layer_config(GetParam());
  auto weights = make_random_weights(config, 22);
  auto plain = make_layer(config, *weights, {});
  auto eplb =
      make_layer(config, *weights, greedy_placement(config.num_experts, 2 * config.num_experts, 2));
  for (int64_t tokens : {int64_t{0}, int64_t{1}, int64_t{33}}) {
    SCOPED_TRACE("T = " + std::to_string(tokens));
    const Tensor x = testing::random_x(config, tokens, 50 + tokens);
    const Tensor want = run_forward(*plain, x, TensorView());  // logits = x W_gate^T
    const Tensor got = run_forward(*eplb, x, TensorView());
    EXPECT_TRUE(bit_identical(got, want)) << "relative L2 " << relative_l2(got, want);
  }
}

TEST_P(EplbLayerTest, IdentityOrPermutedPlacementEqualsNoEplb) {
  const MoeConfig config = layer_config(GetParam());
  auto weights = make_random_weights(config, 23);
  auto plain = make_layer(config, *weights, {});
  std::vector<int32_t> identity(config.num_experts);
  std::iota(identity.begin(), identity.end(), 0);
  std::vector<int32_t> reversed(identity.rbegin(), identity.rend());
  const Tensor x = testing::random_x(config, kTokens, 61);
  const Tensor logits = make_logits(config, kTokens, 62, -1);
  const Tensor want = run_forward(*plain, x, logits);
  for (const auto& slot_to_expert : {identity, reversed}) {
    auto eplb = make_layer(config, *weights, slot_to_expert);
    EXPECT_EQ(eplb->num_slots(), config.num_experts);
    const Tensor got = run_forward(*eplb, x, logits);
    EXPECT_TRUE(bit_identical(got, want)) << (slot_to_expert == identity ? "identity" : "reversed")
                                          << " placement, relative L2 " << relative_l2(got, want);
  }
}

TEST_P(EplbLayerTest, CountsEqualAHostCountOfTheRoutedIds) {
  const MoeConfig config = layer_config(GetParam());
  auto weights = make_random_weights(config, 24);
  auto plain = make_layer(config, *weights, {});
  EXPECT_TRUE(plain->expert_token_counts().empty()) << "counting is off without EPLB";

  const std::vector<int32_t> placement =
      greedy_placement(config.num_experts, config.num_experts + config.num_experts / 2, 1);
  auto eplb = make_layer(config, *weights, placement);
  auto counting = make_layer(config, *weights, {}, /*count=*/true);
  EXPECT_EQ(counting->num_slots(), config.num_experts);
  for (ConfigurableMoE* layer : {eplb.get(), counting.get()}) {
    SCOPED_TRACE(layer == eplb.get() ? "EPLB" : "count_expert_load without a placement");
    const std::vector<int64_t> zeros(config.num_experts, 0);
    EXPECT_EQ(layer->expert_token_counts(), zeros) << "before any forward";
    const Tensor x1 = testing::random_x(config, kTokens, 71);
    const Tensor l1 = make_logits(config, kTokens, 72, kHotExpert);
    const Tensor x2 = testing::random_x(config, 40, 73);
    const Tensor l2 = make_logits(config, 40, 74, -1);
    const std::vector<int64_t> c1 = host_counts(route_ids(*plain, x1, l1), config.num_experts);
    const std::vector<int64_t> c2 = host_counts(route_ids(*plain, x2, l2), config.num_experts);
    // Every token under softmax routing; most under DeepSeek-V3's (the correction bias and
    // the group selection have a say).
    ASSERT_GE(c1[kHotExpert], kTokens * 9 / 10);

    // route() runs the router only: expert ids, the same as without EPLB, and not counted.
    EXPECT_TRUE(bit_identical(route_ids(*layer, x1, l1), route_ids(*plain, x1, l1)))
        << "route() must return expert ids";
    run_forward(*layer, x1, l1);
    EXPECT_EQ(layer->expert_token_counts(), c1) << "after one forward";
    run_forward(*layer, x2, l2);
    std::vector<int64_t> sum(config.num_experts);
    for (int e = 0; e < config.num_experts; ++e) sum[e] = c1[e] + c2[e];
    EXPECT_EQ(layer->expert_token_counts(), sum) << "after two forwards: they accumulate";
    layer->reset_expert_token_counts();
    EXPECT_EQ(layer->expert_token_counts(), zeros) << "after reset";
    run_forward(*layer, x2, l2);
    EXPECT_EQ(layer->expert_token_counts(), c2) << "after reset and one forward";
  }
}

INSTANTIATE_TEST_SUITE_P(Layers, EplbLayerTest,
                         ::testing::Values(LayerCase{Family::kSoftmax, QuantMode::kBF16},
                                           LayerCase{Family::kSoftmax, QuantMode::kFP8Block},
                                           LayerCase{Family::kDeepSeekV3, QuantMode::kBF16},
                                           LayerCase{Family::kDeepSeekV3, QuantMode::kFP8Block}),
                         case_name);

// ---- read_eplb_placement ---------------------------------------------------------------------

MoeConfig file_config() { return layer_config({Family::kSoftmax, QuantMode::kBF16}); }

// The JSON `moe eplb plan --out` writes (with the keys the reader ignores).
nlohmann::json placement_json(const std::vector<int32_t>& slot_to_expert, int num_experts,
                              int num_ranks) {
  return {{"num_experts", num_experts}, {"num_slots", slot_to_expert.size()},
          {"num_ranks", num_ranks},     {"slot_to_expert", slot_to_expert},
          {"method", "greedy"},         {"imbalance_before", 1.5},
          {"imbalance_after", 1.01}};
}

TEST(ReadEplbPlacement, ReadsWhatThePlannerWrites) {
  const MoeConfig config = file_config();
  const std::vector<int32_t> two_ranks = greedy_placement(config.num_experts, 24, 2);
  TempFile file("round_trip.json");
  file.write(placement_json(two_ranks, config.num_experts, 2).dump(2));
  EXPECT_EQ(read_eplb_placement(file.str(), config, 2), two_ranks);
  // A placement made for 2 ranks also runs on 1 (rank 0 then holds every slot) or 4.
  EXPECT_EQ(read_eplb_placement(file.str(), config, 1), two_ranks);
  EXPECT_EQ(read_eplb_placement(file.str(), config, 4), two_ranks);
}

TEST(ReadEplbPlacement, ErrorsNameTheFileAndTheField) {
  const MoeConfig config = file_config();
  const int num_experts = config.num_experts;
  const std::vector<int32_t> good = greedy_placement(num_experts, 24, 2);
  TempFile file("bad.json");
  const std::string path = file.str();
  auto expect_bad = [&](const std::string& text, int ep_size,
                        const std::vector<std::string>& needles) {
    SCOPED_TRACE(text.substr(0, 80));
    file.write(text);
    std::vector<std::string> all = {path};
    all.insert(all.end(), needles.begin(), needles.end());
    expect_error_containing([&] { read_eplb_placement(path, config, ep_size); }, all);
  };

  for (const char* key : {"num_experts", "num_slots", "num_ranks", "slot_to_expert"}) {
    nlohmann::json j = placement_json(good, num_experts, 2);
    j.erase(key);
    expect_bad(j.dump(), 2, {key});
  }
  nlohmann::json not_integer = placement_json(good, num_experts, 2);
  not_integer["num_slots"] = "24";
  expect_bad(not_integer.dump(), 2, {"num_slots"});

  // The layer has 16 experts.
  std::vector<int32_t> for_32(48);
  for (int s = 0; s < 48; ++s) for_32[s] = s % 32;
  expect_bad(placement_json(for_32, 32, 2).dump(), 2, {"num_experts", "32", "16"});
  // 24 slots over 5 ranks.
  expect_bad(placement_json(good, num_experts, 2).dump(), 5, {"num_slots", "24", "5"});
  // Expert 5 in no slot (its slots given to expert 0).
  std::vector<int32_t> orphan = good;
  std::replace(orphan.begin(), orphan.end(), 5, 0);
  expect_bad(placement_json(orphan, num_experts, 2).dump(), 2, {"expert 5"});
  // An id outside [0, 16).
  std::vector<int32_t> out_of_range = good;
  out_of_range[7] = 16;
  expect_bad(placement_json(out_of_range, num_experts, 2).dump(), 2, {"slot 7", "16"});
  // slot_to_expert shorter than num_slots.
  nlohmann::json short_table = placement_json(good, num_experts, 2);
  short_table["slot_to_expert"].erase(short_table["slot_to_expert"].size() - 1);
  expect_bad(short_table.dump(), 2, {"slot_to_expert", "23", "24"});
  // Fewer slots than experts.
  const std::vector<int32_t> too_few(8, 0);
  expect_bad(placement_json(too_few, num_experts, 2).dump(), 2, {"num_slots", "8"});
  // Not JSON, and not an object.
  expect_bad("{\"num_experts\": 16, \"num_slots\": ", 2, {"JSON"});
  expect_bad("[1, 2, 3]", 2, {"object"});
  // No file.
  const std::string missing = path + ".missing";
  expect_error([&] { read_eplb_placement(missing, config, 2); }, {missing});
}

}  // namespace
}  // namespace moe
