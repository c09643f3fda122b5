// route_cpu on hand-worked cases (every method, the DeepSeek-V3 group masking, renormalize,
// scaling, Kimi-K2's single group), the tie rules, and every error path.
//
// Expected values are worked out by hand in the comments. Logits are chosen so that the
// probabilities are round numbers: softmax over ln(a_e) gives a_e / sum(a), and
// sigmoid(ln(p / (1 - p))) = p; those identities hold to a few ulps in fp32, so weights are
// compared within 1e-6 and ids exactly. Tie cases use values that are exact in binary.
#include <gtest/gtest.h>

#include <cmath>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/test_util.h"
#include "core/random.h"
#include "moe/errors.h"
#include "routing/routing.h"

namespace moe {
namespace {

using testing::expect_error;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Routed {
  std::vector<int32_t> ids;    // [T * k]
  std::vector<float> weights;  // [T * k]
};

/// Routes T = logits.size() / E tokens; outputs are poisoned first.
Routed route(const RoutingConfig& routing, int top_k, int num_experts, std::vector<float> logits,
             std::vector<float> bias = {}) {
  const int64_t num_tokens = static_cast<int64_t>(logits.size()) / num_experts;
  Routed r;
  r.ids.resize(num_tokens * top_k);
  r.weights.resize(num_tokens * top_k);
  const TensorView ids(r.ids.data(), DType::kI32, {num_tokens, top_k});
  const TensorView weights(r.weights.data(), DType::kF32, {num_tokens, top_k});
  fill_poison(ids);
  fill_poison(weights);
  const TensorView bias_view =
      bias.empty() ? TensorView()
                   : TensorView(bias.data(), DType::kF32, {static_cast<int64_t>(bias.size())});
  route_cpu(routing, top_k, TensorView(logits.data(), DType::kF32, {num_tokens, num_experts}),
            bias_view, ids, weights);
  return r;
}

/// logit(p) = ln(p / (1 - p)): sigmoid of it is p.
float logit(double p) { return static_cast<float>(std::log(p / (1.0 - p))); }
float ln(double a) { return static_cast<float>(std::log(a)); }

void expect_weights_near(const std::vector<float>& got, std::initializer_list<double> want) {
  ASSERT_EQ(got.size(), want.size());
  size_t i = 0;
  for (double w : want) {
    EXPECT_NEAR(got[i], w, 1e-6) << "weight " << i;
    ++i;
  }
}

RoutingConfig softmax_topk(bool renormalize, float scale = 1.0f) {
  RoutingConfig r;
  r.method = RoutingMethod::kSoftmaxTopK;
  r.renormalize = renormalize;
  r.routed_scaling_factor = scale;
  return r;
}

RoutingConfig deepseek(int groups, int topk_groups, bool bias, bool renormalize, float scale) {
  RoutingConfig r;
  r.method = RoutingMethod::kDeepSeekV3;
  r.num_groups = groups;
  r.topk_groups = topk_groups;
  r.has_correction_bias = bias;
  r.renormalize = renormalize;
  r.routed_scaling_factor = scale;
  return r;
}

RoutingConfig method_only(RoutingMethod m) {
  RoutingConfig r;
  r.method = m;
  return r;
}

/// ---- Softmax-topk ---------------------------------------------------------------------------

// l = ln[1, 4, 2, 3] -> p = [.1, .4, .2, .3]; top-2 = experts 1 (.4), 3 (.3).
const std::vector<float> kSoftmaxLogits = {ln(1), ln(4), ln(2), ln(3)};

TEST(RoutingSoftmaxTopK, RenormalizeOffGivesProbabilities) {
  const Routed r = route(softmax_topk(false), 2, 4, kSoftmaxLogits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3}));
  expect_weights_near(r.weights, {0.4, 0.3});
}

TEST(RoutingSoftmaxTopK, RenormalizeDividesBySelectedSum) {
  // [.4, .3] / .7 = [4/7, 3/7]
  const Routed r = route(softmax_topk(true), 2, 4, kSoftmaxLogits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3}));
  expect_weights_near(r.weights, {4.0 / 7, 3.0 / 7});
}

TEST(RoutingSoftmaxTopK, ScalingAppliesAfterRenormalize) {
  // [4/7, 3/7] * 2 = [8/7, 6/7]; without renormalize [.4, .3] * 2.5 = [1, .75]
  Routed r = route(softmax_topk(true, 2.0f), 2, 4, kSoftmaxLogits);
  expect_weights_near(r.weights, {8.0 / 7, 6.0 / 7});
  r = route(softmax_topk(false, 2.5f), 2, 4, kSoftmaxLogits);
  expect_weights_near(r.weights, {1.0, 0.75});
}

TEST(RoutingSoftmaxTopK, KEqualsEListsAllInDecreasingOrder) {
  const Routed r = route(softmax_topk(false), 4, 4, kSoftmaxLogits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3, 2, 0}));
  expect_weights_near(r.weights, {0.4, 0.3, 0.2, 0.1});
}

TEST(RoutingSoftmaxTopK, SeveralTokensAreIndependent) {
  // token 0 as above; token 1: l = ln[3, 1, 1, 5] -> p = [.3, .1, .1, .5] -> [3, 0]
  std::vector<float> logits = kSoftmaxLogits;
  for (double a : {3, 1, 1, 5}) logits.push_back(ln(a));
  const Routed r = route(softmax_topk(false), 2, 4, logits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3, 3, 0}));
  expect_weights_near(r.weights, {0.4, 0.3, 0.5, 0.3});
}

TEST(RoutingSoftmaxTopK, NegativeInfinityLogitsGetZeroProbability) {
  // l = [-inf, 0, -inf, 0] -> p = [0, .5, 0, .5]; k = 3 takes a zero-probability expert.
  const Routed r = route(softmax_topk(false), 3, 4, {-kInf, 0.0f, -kInf, 0.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3, 0}));
  EXPECT_EQ(r.weights, (std::vector<float>{0.5f, 0.5f, 0.0f}));
}

TEST(RoutingTies, EqualLogitsGoToTheLowerIndex) {
  // l = [1, 3, 3, 0, 3]: experts 1, 2, 4 tie. Softmax k = 2 -> [1, 2], renormalized to
  // exactly [.5, .5] (equal floats divided by their double).
  Routed r = route(softmax_topk(true), 2, 5, {1, 3, 3, 0, 3});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(r.weights, (std::vector<float>{0.5f, 0.5f}));
  r = route(softmax_topk(true), 3, 5, {1, 3, 3, 0, 3});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2, 4}));
  for (RoutingMethod m : {RoutingMethod::kLlama4, RoutingMethod::kGptOss}) {
    r = route(method_only(m), 3, 5, {1, 3, 3, 0, 3});
    EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2, 4}));
    EXPECT_EQ(r.weights[0], r.weights[1]);
    EXPECT_EQ(r.weights[1], r.weights[2]);
  }
  // All equal: the first k in order.
  r = route(method_only(RoutingMethod::kLlama4), 3, 6, std::vector<float>(6, -0.25f));
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1, 2}));
}

// ---- Llama-4 and GPT-OSS -------------------------------------------------------------------

TEST(RoutingLlama4, SigmoidOfTopLogits) {
  // l = [.5, -1, 2, 2]: k = 1 -> [2] (tie with 3, lower index), w = sigmoid(2) = 0.8807971;
  // k = 3 -> [2, 3, 0], sigmoid(.5) = 0.6224593. renormalize (true here) does not apply.
  RoutingConfig cfg = method_only(RoutingMethod::kLlama4);
  cfg.renormalize = true;
  Routed r = route(cfg, 1, 4, {0.5f, -1.0f, 2.0f, 2.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2}));
  expect_weights_near(r.weights, {0.8807971});
  r = route(cfg, 3, 4, {0.5f, -1.0f, 2.0f, 2.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 3, 0}));
  expect_weights_near(r.weights, {0.8807971, 0.8807971, 0.6224593});
}

TEST(RoutingLlama4, NegativeInfinityLogitsAreAllowed) {
  // l = [-inf, -inf, -inf, 1], k = 2 -> [3, 0] with [sigmoid(1) = 0.7310586, sigmoid(-inf) = 0]
  const Routed r = route(method_only(RoutingMethod::kLlama4), 2, 4, {-kInf, -kInf, -kInf, 1.0f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 0}));
  expect_weights_near(r.weights, {0.7310586, 0.0});
}

TEST(RoutingGptOss, SoftmaxOverTheSelected) {
  // l = ln[1, 5, 2, 3, .5], k = 3 -> [1, 3, 2]; softmax over [5, 3, 2] = [.5, .3, .2].
  // renormalize = false changes nothing (the softmax is normalized by definition).
  RoutingConfig cfg = method_only(RoutingMethod::kGptOss);
  cfg.renormalize = false;
  const std::vector<float> logits = {ln(1), ln(5), ln(2), ln(3), ln(0.5)};
  Routed r = route(cfg, 3, 5, logits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3, 2}));
  expect_weights_near(r.weights, {0.5, 0.3, 0.2});
  // k = 1: exp(0) / exp(0) = 1 exactly.
  r = route(cfg, 1, 5, logits);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1}));
  EXPECT_EQ(r.weights, (std::vector<float>{1.0f}));
  // A -inf among the selected gets weight 0: l = [-inf, 2, -inf], k = 2 -> [1, 0], [1, 0].
  r = route(cfg, 2, 3, {-kInf, 2.0f, -kInf});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(r.weights, (std::vector<float>{1.0f, 0.0f}));
}

// ---- DeepSeek-V3 ---------------------------------------------------------------------------

// E = 8 in 4 groups of 2.
//   s     = [.90, .50, .75, .25, .80, .50, .20, .10]
//   bias  = [.05,-.45,-.05, .25,-.20, .00, .10, .10]
//   s'    = [.95, .05, .70, .50, .60, .50, .30, .20]
//   group top-2 sums: g0 1.0, g1 1.2, g2 1.1, g3 .5
// topk_groups = 2 keeps g1 and g2: expert 0, the globally best biased score, is dropped.
// Top-2 over {2: .7, 3: .5, 4: .6, 5: .5} -> [2, 4]; the weights are the unbiased s = [.75, .8]
// (listed by biased score, so the smaller weight comes first).
const std::vector<float> kDsS = {.90f, .50f, .75f, .25f, .80f, .50f, .20f, .10f};
const std::vector<float> kDsBias = {.05f, -.45f, -.05f, .25f, -.20f, .00f, .10f, .10f};

std::vector<float> logits_for(const std::vector<float>& s) {
  std::vector<float> l;
  for (float p : s) l.push_back(logit(p));
  return l;
}

TEST(RoutingDeepSeekV3, DroppedGroupHoldsTheGlobalBest) {
  // renormalize: [.75, .8] / 1.55 = [.4838710, .5161290]; * 2.5 = [1.2096774, 1.2903226]
  Routed r = route(deepseek(4, 2, true, true, 2.5f), 2, 8, logits_for(kDsS), kDsBias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 4}));
  expect_weights_near(r.weights, {1.2096774, 1.2903226});
  // No renormalize, scale 1: the raw sigmoid scores.
  r = route(deepseek(4, 2, true, false, 1.0f), 2, 8, logits_for(kDsS), kDsBias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 4}));
  expect_weights_near(r.weights, {0.75, 0.8});
}

TEST(RoutingDeepSeekV3, AllGroupsKeptSelectsByBiasedScore) {
  // topk_groups = 4: top-2 of s' overall = [0 (.95), 2 (.7)], w = [.9, .75]
  // renormalized: [.9, .75] / 1.65 = [.5454545, .4545455]; * 2.5 = [1.3636364, 1.1363636]
  const Routed r = route(deepseek(4, 4, true, true, 2.5f), 2, 8, logits_for(kDsS), kDsBias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 2}));
  expect_weights_near(r.weights, {1.3636364, 1.1363636});
}

TEST(RoutingDeepSeekV3, DroppedGroupsAreMinusInfinityNotZero) {
  // E = 4 in 2 groups; every biased score is negative:
  //   s = [.75, .25, .5, .5], bias = [-.85, -.45, -1.0, -1.1] -> s' = [-.1, -.2, -.5, -.6]
  //   group sums g0 -.3, g1 -1.1 -> keep g0. Top-2 over g0 -> [0, 1].
  // Masking the dropped group with 0.0 (HF transformers) would pick [2, 3] (0 > -.1).
  // w = [.75, .25] / (1 + 1e-20) = [.75, .25].
  const std::vector<float> bias = {-.85f, -.45f, -1.0f, -1.1f};
  Routed r =
      route(deepseek(2, 1, true, true, 1.0f), 2, 4, logits_for({.75f, .25f, .5f, .5f}), bias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  expect_weights_near(r.weights, {0.75, 0.25});
  // Not renormalized, scaled by 2.5: [1.875, .625]
  r = route(deepseek(2, 1, true, false, 2.5f), 2, 4, logits_for({.75f, .25f, .5f, .5f}), bias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  expect_weights_near(r.weights, {1.875, 0.625});
}

TEST(RoutingDeepSeekV3, WithoutBiasGroupScoreIsTheMax) {
  // DeepSeek-V2 style, E = 6 in 3 groups, keep 2:
  //   s = [.9, .1 | .75, .8 | .85, .2]; group max .9, .8, .85 -> keep g0, g2 -> [0, 4],
  //   w = [.9, .85]. (A top-2 sum, 1.0 / 1.55 / 1.05, would have kept g1 and g2.)
  const Routed r =
      route(deepseek(3, 2, false, false, 1.0f), 2, 6, logits_for({.9f, .1f, .75f, .8f, .85f, .2f}));
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 4}));
  expect_weights_near(r.weights, {0.9, 0.85});
}

TEST(RoutingDeepSeekV3, KimiK2SingleGroup) {
  // n_group = topk_group = 1, E = 8, k = 3, scale 2.827:
  //   s    = [.1, .9, .5, .75, .25, .8, .2, .5]
  //   bias = [.85, 0, 0, 0, .3, 0, 0, .1]   -> s' = [.95, .9, .5, .75, .55, .8, .2, .6]
  //   S = [0, 1, 5] (expert 0 has the smallest weight but the best biased score)
  //   w = [.1, .9, .8] / 1.8 = [.0555556, .5, .4444444] * 2.827 = [.1570556, 1.4135, 1.2564444]
  const Routed r = route(deepseek(1, 1, true, true, 2.827f), 3, 8,
                         logits_for({.1f, .9f, .5f, .75f, .25f, .8f, .2f, .5f}),
                         {.85f, 0, 0, 0, .3f, 0, 0, .1f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1, 5}));
  expect_weights_near(r.weights, {0.1570556, 1.4135, 1.2564444});
}

TEST(RoutingTies, EqualGroupScoresGoToTheLowerGroup) {
  // Logits 0 -> s = .5 exactly. E = 4 in 2 groups, keep 1.
  // bias = [.25, -.25, 0, 0] -> s' = [.75, .25, .5, .5]: sums 1.0 and 1.0 (exact) -> g0 -> [0],
  // w = .5 / (.5 + 1e-20) = 1.
  Routed r = route(deepseek(2, 1, true, true, 1.0f), 1, 4, {0, 0, 0, 0}, {.25f, -.25f, 0, 0});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0}));
  EXPECT_EQ(r.weights, (std::vector<float>{1.0f}));
  // bias = [0, 0, .25, -.25] -> s' = [.5, .5, .75, .25]: the groups tie again, g0 is kept
  // although g1 holds the best expert; inside g0 the experts tie -> [0, 1].
  r = route(deepseek(2, 1, true, false, 1.0f), 2, 4, {0, 0, 0, 0}, {0, 0, .25f, -.25f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(r.weights, (std::vector<float>{0.5f, 0.5f}));
  // Without bias (group max): all equal -> g0 -> [0, 1].
  r = route(deepseek(2, 1, false, false, 1.0f), 2, 4, {.3f, .3f, .3f, .3f});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
}

TEST(RoutingDeepSeekV3, KEqualsTheKeptExperts) {
  // The groups of DroppedGroupHoldsTheGlobalBest with one group kept (g1: s' = [.7, .5]).
  const Routed r = route(deepseek(4, 1, true, false, 1.0f), 2, 8, logits_for(kDsS), kDsBias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 3}));
  expect_weights_near(r.weights, {0.75, 0.25});
}

TEST(Routing, ZeroTokens) {
  const Routed r = route(softmax_topk(true), 2, 8, {});
  EXPECT_TRUE(r.ids.empty());
}

// ---- Errors ---------------------------------------------------------------------------------

std::vector<float> some_logits(int64_t num_tokens, int num_experts, uint64_t seed) {
  std::vector<float> l(num_tokens * num_experts);
  for (size_t i = 0; i < l.size(); ++i) l[i] = normal_at(stream_id(seed), i);
  return l;
}

TEST(RoutingErrors, NaNLogitNamesTokenAndExpert) {
  for (RoutingMethod m : {RoutingMethod::kSoftmaxTopK, RoutingMethod::kDeepSeekV3,
                          RoutingMethod::kLlama4, RoutingMethod::kGptOss}) {
    std::vector<float> logits = some_logits(4, 8, 11);
    logits[2 * 8 + 5] = kNaN;
    logits[3 * 8 + 1] = kNaN;  // a later one is not the one reported
    expect_error([&] { route(method_only(m), 2, 8, logits); }, {"token 2", "expert 5", "NaN"});
  }
}

TEST(RoutingErrors, PositiveInfinityLogit) {
  std::vector<float> logits = some_logits(3, 8, 12);
  logits[1 * 8 + 0] = kInf;
  expect_error([&] { route(method_only(RoutingMethod::kLlama4), 1, 8, logits); },
               {"token 1", "expert 0", "+inf"});
}

TEST(RoutingErrors, AllMinusInfinityUnderSoftmax) {
  std::vector<float> logits = some_logits(3, 4, 13);
  for (int e = 0; e < 4; ++e) logits[2 * 4 + e] = -kInf;
  for (RoutingMethod m : {RoutingMethod::kSoftmaxTopK, RoutingMethod::kGptOss}) {
    expect_error([&] { route(method_only(m), 2, 4, logits); }, {"token 2", "-inf"});
  }
  // Sigmoid-based methods accept it.
  EXPECT_NO_THROW(route(method_only(RoutingMethod::kLlama4), 2, 4, logits));
  EXPECT_NO_THROW(route(method_only(RoutingMethod::kDeepSeekV3), 2, 4, logits));
}

TEST(RoutingErrors, TopKOutOfRange) {
  const std::vector<float> logits = some_logits(2, 8, 14);
  expect_error([&] { route(softmax_topk(true), 9, 8, logits); }, {"top_k = 9", "8"});
  expect_error([&] { route(softmax_topk(true), 0, 8, logits); }, {"top_k = 0"});
}

// Calls route_cpu on views the test shapes itself.
struct Buffers {
  std::vector<float> logits = some_logits(4, 8, 15);
  std::vector<int32_t> ids = std::vector<int32_t>(4 * 2);
  std::vector<float> weights = std::vector<float>(4 * 2);
  std::vector<float> bias = std::vector<float>(8, 0.01f);
};

TEST(RoutingErrors, Shapes) {
  Buffers b;
  const RoutingConfig cfg = softmax_topk(true);
  const TensorView logits(b.logits.data(), DType::kF32, {4, 8});
  const TensorView ids(b.ids.data(), DType::kI32, {4, 2});
  const TensorView weights(b.weights.data(), DType::kF32, {4, 2});
  EXPECT_NO_THROW(route_cpu(cfg, 2, logits, {}, ids, weights));
  // logits of the wrong dtype or rank
  expect_error(
      [&] {
        route_cpu(cfg, 2, TensorView(b.logits.data(), DType::kBF16, {4, 8}), {}, ids, weights);
      },
      {"router logits", "bf16"});
  expect_error(
      [&] { route_cpu(cfg, 2, TensorView(b.logits.data(), DType::kF32, {32}), {}, ids, weights); },
      {"router logits", "[T, E]"});
  // ids: wrong k, wrong T, wrong dtype
  expect_error(
      [&] {
        route_cpu(cfg, 2, logits, {}, TensorView(b.ids.data(), DType::kI32, {2, 4}), weights);
      },
      {"topk_ids", "[4, 2]"});
  expect_error(
      [&] {
        route_cpu(cfg, 2, logits, {}, TensorView(b.ids.data(), DType::kI32, {3, 2}), weights);
      },
      {"topk_ids"});
  expect_error(
      [&] {
        route_cpu(cfg, 2, logits, {}, TensorView(b.ids.data(), DType::kF32, {4, 2}), weights);
      },
      {"topk_ids", "i32"});
  // weights: wrong dtype, wrong shape
  expect_error(
      [&] {
        route_cpu(cfg, 2, logits, {}, ids, TensorView(b.weights.data(), DType::kI32, {4, 2}));
      },
      {"topk_weights", "f32"});
  expect_error(
      [&] { route_cpu(cfg, 2, logits, {}, ids, TensorView(b.weights.data(), DType::kF32, {8})); },
      {"topk_weights"});
  // not on the host
  expect_error(
      [&] {
        route_cpu(cfg, 2, TensorView(b.logits.data(), DType::kF32, {4, 8}, Device::cuda(0)), {},
                  ids, weights);
      },
      {"router logits", "host"});
}

TEST(RoutingErrors, GroupSettings) {
  const std::vector<float> logits = some_logits(2, 8, 16);
  expect_error([&] { route(deepseek(3, 1, false, true, 1.0f), 2, 8, logits); },
               {"num_groups = 3", "8"});
  expect_error([&] { route(deepseek(0, 1, false, true, 1.0f), 2, 8, logits); }, {"num_groups = 0"});
  expect_error([&] { route(deepseek(4, 5, false, true, 1.0f), 2, 8, logits); },
               {"topk_groups = 5", "num_groups = 4"});
  expect_error([&] { route(deepseek(4, 0, false, true, 1.0f), 2, 8, logits); },
               {"topk_groups = 0"});
  // One kept group of 2 experts cannot give 3.
  expect_error([&] { route(deepseek(4, 1, false, true, 1.0f), 3, 8, logits); },
               {"top_k = 3", "2 experts", "topk_groups = 1"});
  // Groups of one expert have no top-2 sum (with a bias); fine without one.
  expect_error(
      [&] { route(deepseek(8, 4, true, true, 1.0f), 2, 8, logits, std::vector<float>(8, 0.0f)); },
      {"num_groups = 8", "groups of 1"});
  EXPECT_NO_THROW(route(deepseek(8, 4, false, true, 1.0f), 2, 8, logits));
}

TEST(RoutingErrors, CorrectionBiasMustMatchTheConfig) {
  const std::vector<float> logits = some_logits(2, 8, 17);
  const std::vector<float> bias(8, 0.1f);
  // Announced but missing.
  expect_error([&] { route(deepseek(1, 1, true, true, 1.0f), 2, 8, logits); },
               {"has_correction_bias", "no correction bias", "f32[8]"});
  // Given but not announced (DeepSeek-V3 without bias, and another method).
  expect_error([&] { route(deepseek(1, 1, false, true, 1.0f), 2, 8, logits, bias); },
               {"correction bias", "has_correction_bias is false"});
  expect_error([&] { route(softmax_topk(true), 2, 8, logits, bias); },
               {"correction bias", "has_correction_bias is false"});
  // Announced for a method that has none.
  RoutingConfig cfg = softmax_topk(true);
  cfg.has_correction_bias = true;
  expect_error([&] { route(cfg, 2, 8, logits, bias); }, {"has_correction_bias", "DeepSeek-V3"});
  // Wrong shape, wrong dtype, non-finite values.
  expect_error(
      [&] { route(deepseek(1, 1, true, true, 1.0f), 2, 8, logits, std::vector<float>(9, 0.1f)); },
      {"correction bias", "[8]", "[9]"});
  Buffers b;
  expect_error(
      [&] {
        route_cpu(deepseek(1, 1, true, true, 1.0f), 2,
                  TensorView(b.logits.data(), DType::kF32, {4, 8}),
                  TensorView(b.bias.data(), DType::kBF16, {8}),
                  TensorView(b.ids.data(), DType::kI32, {4, 2}),
                  TensorView(b.weights.data(), DType::kF32, {4, 2}));
      },
      {"correction bias", "bf16"});
  std::vector<float> bad = bias;
  bad[3] = kNaN;
  expect_error([&] { route(deepseek(1, 1, true, true, 1.0f), 2, 8, logits, bad); },
               {"correction bias", "expert 3"});
  bad[3] = -kInf;
  expect_error([&] { route(deepseek(1, 1, true, true, 1.0f), 2, 8, logits, bad); },
               {"correction bias", "expert 3"});
}

TEST(RoutingErrors, ScalingFactor) {
  const std::vector<float> logits = some_logits(2, 8, 18);
  expect_error([&] { route(softmax_topk(true, kNaN), 2, 8, logits); }, {"routed_scaling_factor"});
  expect_error([&] { route(deepseek(1, 1, false, true, 0.0f), 2, 8, logits); },
               {"routed_scaling_factor"});
}

}  // namespace
}  // namespace moe
