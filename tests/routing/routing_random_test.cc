// route_cpu against a second, naive implementation on random logits: ids and weights must
// match bit for bit.
//
// The naive side computes the same fp32 scores with the same operations (the formulas of
// routing.cc's header), but selects differently: it stable-sorts every candidate on
// decreasing score (so equal scores keep increasing index order), masks dropped DeepSeek
// groups with -inf and takes the first k. Logit distributions include coarse values (many
// exact ties), bf16-rounded values, -inf entries and strongly negative correction biases.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "core/random.h"
#include "moe/errors.h"
#include "quant/formats.h"
#include "routing/routing.h"

namespace moe {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Indices 0..n-1 in decreasing score, ties by increasing index.
std::vector<int> ranked(const std::vector<float>& score) {
  std::vector<int> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return score[a] > score[b]; });
  return idx;
}

// One token of the naive router: ids [k], weights [k].
void naive_route(const RoutingConfig& cfg, int k, const std::vector<float>& l,
                 const std::vector<float>& bias, int32_t* ids, float* w) {
  const int num_experts = static_cast<int>(l.size());
  std::vector<float> selection(num_experts), weight_of(num_experts);
  switch (cfg.method) {
    case RoutingMethod::kSoftmaxTopK: {
      const float m = *std::max_element(l.begin(), l.end());
      std::vector<float> ex(num_experts);
      float sum = 0.0f;
      for (int e = 0; e < num_experts; ++e) {
        ex[e] = std::exp(l[e] - m);
        sum += ex[e];
      }
      for (int e = 0; e < num_experts; ++e) selection[e] = weight_of[e] = ex[e] / sum;
      break;
    }
    case RoutingMethod::kDeepSeekV3: {
      std::vector<float> s(num_experts), b(num_experts);
      for (int e = 0; e < num_experts; ++e) {
        s[e] = sigmoid(l[e]);
        b[e] = bias.empty() ? s[e] : s[e] + bias[e];
      }
      const int group_size = num_experts / cfg.num_groups;
      std::vector<float> group_score(cfg.num_groups);
      for (int g = 0; g < cfg.num_groups; ++g) {
        if (bias.empty()) {
          group_score[g] =
              *std::max_element(s.begin() + g * group_size, s.begin() + (g + 1) * group_size);
        } else {
          std::vector<float> members(b.begin() + g * group_size, b.begin() + (g + 1) * group_size);
          std::sort(members.begin(), members.end(), std::greater<float>());
          group_score[g] = members[0] + members[1];
        }
      }
      const std::vector<int> groups = ranked(group_score);
      std::vector<bool> kept(cfg.num_groups, false);
      for (int i = 0; i < cfg.topk_groups; ++i) kept[groups[i]] = true;
      for (int e = 0; e < num_experts; ++e) {
        selection[e] = kept[e / group_size] ? b[e] : kNegInf;
        weight_of[e] = s[e];
      }
      break;
    }
    case RoutingMethod::kLlama4:
    case RoutingMethod::kGptOss:
      selection = l;
      break;
  }
  const std::vector<int> order = ranked(selection);
  for (int i = 0; i < k; ++i) ids[i] = order[i];
  if (cfg.method == RoutingMethod::kLlama4) {
    for (int i = 0; i < k; ++i) w[i] = sigmoid(l[ids[i]]);
  } else if (cfg.method == RoutingMethod::kGptOss) {
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) {
      w[i] = std::exp(l[ids[i]] - l[ids[0]]);
      sum += w[i];
    }
    for (int i = 0; i < k; ++i) w[i] = w[i] / sum;
  } else {
    for (int i = 0; i < k; ++i) w[i] = weight_of[ids[i]];
    if (cfg.renormalize) {
      float sum = 0.0f;
      for (int i = 0; i < k; ++i) sum += w[i];
      if (cfg.method == RoutingMethod::kDeepSeekV3) sum += 1e-20f;
      for (int i = 0; i < k; ++i) w[i] = w[i] / sum;
    }
  }
  for (int i = 0; i < k; ++i) w[i] = w[i] * cfg.routed_scaling_factor;
}

enum class Dist { kNormal, kCoarse, kBF16, kWithNegInf };
const char* dist_name(Dist d) {
  switch (d) {
    case Dist::kNormal:
      return "normal";
    case Dist::kCoarse:
      return "coarse";
    case Dist::kBF16:
      return "bf16";
    case Dist::kWithNegInf:
      return "with -inf";
  }
  return "?";
}

std::vector<float> random_logits(int64_t n, uint64_t stream, Dist dist) {
  std::vector<float> l(n);
  for (int64_t i = 0; i < n; ++i) {
    const float z = normal_at(stream, i);
    switch (dist) {
      case Dist::kNormal:
        l[i] = 2.0f * z;
        break;
      case Dist::kCoarse:  // multiples of 1/2 in [-3, 3]: many exact ties
        l[i] = std::clamp(std::round(2.0f * z), -6.0f, 6.0f) * 0.5f;
        break;
      case Dist::kBF16:
        l[i] = fmt::round_bf16(z);
        break;
      case Dist::kWithNegInf:
        l[i] = uniform_at(stream ^ 0x5eed, i) < 0.125f ? kNegInf : z;
        break;
    }
  }
  return l;
}

// Routes `tokens` random tokens with route_cpu and the naive router; expects identical bits.
void check_case(const RoutingConfig& cfg, int num_experts, int k, uint64_t seed, Dist dist,
                int bias_kind) {
  constexpr int64_t kTokens = 40;
  SCOPED_TRACE(::testing::Message()
               << "E=" << num_experts << " k=" << k << " groups=" << cfg.num_groups << "/"
               << cfg.topk_groups << " renorm=" << cfg.renormalize
               << " scale=" << cfg.routed_scaling_factor << " dist=" << dist_name(dist)
               << " bias_kind=" << bias_kind << " seed=" << seed);
  std::vector<float> logits = random_logits(kTokens * num_experts, stream_id(seed, 1), dist);
  std::vector<float> bias;
  if (cfg.has_correction_bias) {
    bias.resize(num_experts);
    for (int e = 0; e < num_experts; ++e) {
      const float z = normal_at(stream_id(seed, 2), e);
      bias[e] = bias_kind == 0   ? 0.1f * z
                : bias_kind == 1 ? std::round(4.0f * z) * 0.125f  // ties in s' with coarse l
                                 : -1.0f - std::fabs(z);          // every s' negative
    }
  }
  std::vector<int32_t> ids(kTokens * k);
  std::vector<float> weights(kTokens * k);
  const TensorView ids_view(ids.data(), DType::kI32, {kTokens, k});
  const TensorView weights_view(weights.data(), DType::kF32, {kTokens, k});
  fill_poison(ids_view);
  fill_poison(weights_view);
  route_cpu(cfg, k, TensorView(logits.data(), DType::kF32, {kTokens, num_experts}),
            bias.empty() ? TensorView() : TensorView(bias.data(), DType::kF32, {num_experts}),
            ids_view, weights_view);

  std::vector<int32_t> want_ids(k);
  std::vector<float> want_w(k);
  int mismatches = 0;
  for (int64_t t = 0; t < kTokens && mismatches < 3; ++t) {
    const std::vector<float> row(logits.begin() + t * num_experts,
                                 logits.begin() + (t + 1) * num_experts);
    naive_route(cfg, k, row, bias, want_ids.data(), want_w.data());
    for (int i = 0; i < k; ++i) {
      const int32_t got_id = ids[t * k + i];
      const float got_w = weights[t * k + i];
      if (got_id != want_ids[i] ||
          std::bit_cast<uint32_t>(got_w) != std::bit_cast<uint32_t>(want_w[i])) {
        ADD_FAILURE() << "token " << t << " slot " << i << ": got (" << got_id << ", " << got_w
                      << "), naive (" << want_ids[i] << ", " << want_w[i] << ")";
        ++mismatches;
        break;
      }
    }
  }
}

const int kExpertCounts[] = {8, 64, 128, 256, 384};
const int kTopKs[] = {1, 2, 4, 6, 8};
const Dist kDists[] = {Dist::kNormal, Dist::kCoarse, Dist::kBF16, Dist::kWithNegInf};

TEST(RoutingRandom, SoftmaxTopKMatchesNaive) {
  uint64_t case_idx = 0;
  for (int num_experts : kExpertCounts) {
    for (int k : kTopKs) {
      for (bool renormalize : {false, true}) {
        RoutingConfig cfg;
        cfg.method = RoutingMethod::kSoftmaxTopK;
        cfg.renormalize = renormalize;
        cfg.routed_scaling_factor = renormalize ? 1.0f : 2.5f;
        const Dist dist = kDists[case_idx % 4];
        check_case(cfg, num_experts, k, stream_id(101, ++case_idx), dist, 0);
      }
    }
  }
}

TEST(RoutingRandom, LogitTopKMethodsMatchNaive) {
  uint64_t case_idx = 0;
  for (RoutingMethod m : {RoutingMethod::kLlama4, RoutingMethod::kGptOss}) {
    for (int num_experts : kExpertCounts) {
      for (int k : kTopKs) {
        RoutingConfig cfg;
        cfg.method = m;
        for (Dist dist : {kDists[case_idx % 4], kDists[(case_idx + 2) % 4]}) {
          check_case(cfg, num_experts, k, stream_id(202, ++case_idx), dist, 0);
        }
      }
    }
  }
}

// Group settings per expert count: (num_groups, topk_groups), Kimi-K2's (1, 1) included.
std::vector<std::pair<int, int>> group_settings(int num_experts) {
  if (num_experts == 8) return {{1, 1}, {2, 1}, {4, 2}, {4, 3}};
  if (num_experts == 64) return {{1, 1}, {4, 2}, {8, 3}};
  return {{1, 1}, {8, 4}, {8, 1}, {8, 8}};
}

TEST(RoutingRandom, DeepSeekV3MatchesNaive) {
  uint64_t case_idx = 0;
  for (int num_experts : kExpertCounts) {
    for (int k : kTopKs) {
      for (auto [groups, topk_groups] : group_settings(num_experts)) {
        if (k > topk_groups * (num_experts / groups)) continue;
        for (bool has_bias : {true, false}) {
          RoutingConfig cfg;
          cfg.method = RoutingMethod::kDeepSeekV3;
          cfg.num_groups = groups;
          cfg.topk_groups = topk_groups;
          cfg.has_correction_bias = has_bias;
          cfg.renormalize = (case_idx % 3) != 0;
          cfg.routed_scaling_factor = (case_idx % 2) ? 2.5f : 2.827f;
          const Dist dist = kDists[case_idx % 4];
          const int bias_kind = static_cast<int>((case_idx / 4) % 3);
          check_case(cfg, num_experts, k, stream_id(303, ++case_idx), dist, bias_kind);
        }
      }
    }
  }
}

TEST(RoutingRandom, StridedViewsGiveTheSameResult) {
  // Logits with a padded row stride, outputs in padded rows: same values as contiguous.
  constexpr int64_t kTokens = 37, kE = 64, kK = 6;
  const std::vector<float> logits = random_logits(kTokens * kE, stream_id(404), Dist::kCoarse);
  std::vector<float> padded(kTokens * (kE + 5), 1e30f);
  for (int64_t t = 0; t < kTokens; ++t) {
    std::copy_n(logits.begin() + t * kE, kE, padded.begin() + t * (kE + 5));
  }
  std::vector<float> bias(kE);
  for (int e = 0; e < kE; ++e) bias[e] = 0.1f * normal_at(stream_id(405), e);
  RoutingConfig cfg;
  cfg.method = RoutingMethod::kDeepSeekV3;
  cfg.num_groups = 8;
  cfg.topk_groups = 4;
  cfg.has_correction_bias = true;
  cfg.routed_scaling_factor = 2.5f;
  const TensorView bias_view(bias.data(), DType::kF32, {kE});

  std::vector<int32_t> ids(kTokens * kK);
  std::vector<float> weights(kTokens * kK);
  route_cpu(cfg, kK, TensorView(const_cast<float*>(logits.data()), DType::kF32, {kTokens, kE}),
            bias_view, TensorView(ids.data(), DType::kI32, {kTokens, kK}),
            TensorView(weights.data(), DType::kF32, {kTokens, kK}));

  const int64_t logit_shape[] = {kTokens, kE}, logit_strides[] = {kE + 5, 1};
  const int64_t out_shape[] = {kTokens, kK}, out_strides[] = {kK + 2, 1};
  std::vector<int32_t> ids_s(kTokens * (kK + 2), -7);
  std::vector<float> weights_s(kTokens * (kK + 2), -7.0f);
  route_cpu(cfg, kK,
            TensorView(padded.data(), DType::kF32, logit_shape, logit_strides, Device::cpu()),
            bias_view, TensorView(ids_s.data(), DType::kI32, out_shape, out_strides, Device::cpu()),
            TensorView(weights_s.data(), DType::kF32, out_shape, out_strides, Device::cpu()));
  for (int64_t t = 0; t < kTokens; ++t) {
    for (int64_t i = 0; i < kK + 2; ++i) {
      if (i < kK) {
        ASSERT_EQ(ids_s[t * (kK + 2) + i], ids[t * kK + i]) << "token " << t;
        ASSERT_EQ(weights_s[t * (kK + 2) + i], weights[t * kK + i]) << "token " << t;
      } else {  // the padding is untouched
        ASSERT_EQ(ids_s[t * (kK + 2) + i], -7);
        ASSERT_EQ(weights_s[t * (kK + 2) + i], -7.0f);
      }
    }
  }
}

TEST(RoutingRandom, ManyTokensAcrossThreads) {
  // Enough tokens to be split over the thread pool; every token must match the naive router.
  constexpr int64_t kTokens = 3000, kE = 256, kK = 8;
  const std::vector<float> logits = random_logits(kTokens * kE, stream_id(505), Dist::kBF16);
  std::vector<float> bias(kE);
  for (int e = 0; e < kE; ++e) bias[e] = 0.05f * normal_at(stream_id(506), e);
  RoutingConfig cfg;
  cfg.method = RoutingMethod::kDeepSeekV3;
  cfg.num_groups = 8;
  cfg.topk_groups = 4;
  cfg.has_correction_bias = true;
  cfg.routed_scaling_factor = 2.5f;
  std::vector<int32_t> ids(kTokens * kK);
  std::vector<float> weights(kTokens * kK);
  const TensorView ids_view(ids.data(), DType::kI32, {kTokens, kK});
  const TensorView weights_view(weights.data(), DType::kF32, {kTokens, kK});
  fill_poison(ids_view);
  fill_poison(weights_view);
  route_cpu(cfg, kK, TensorView(const_cast<float*>(logits.data()), DType::kF32, {kTokens, kE}),
            TensorView(bias.data(), DType::kF32, {kE}), ids_view, weights_view);
  std::vector<int32_t> want_ids(kK);
  std::vector<float> want_w(kK);
  for (int64_t t = 0; t < kTokens; ++t) {
    naive_route(cfg, kK, std::vector<float>(logits.begin() + t * kE, logits.begin() + (t + 1) * kE),
                bias, want_ids.data(), want_w.data());
    for (int i = 0; i < kK; ++i) {
      ASSERT_EQ(ids[t * kK + i], want_ids[i]) << "token " << t << " slot " << i;
      ASSERT_EQ(std::bit_cast<uint32_t>(weights[t * kK + i]), std::bit_cast<uint32_t>(want_w[i]))
          << "token " << t << " slot " << i;
    }
  }
}

}  // namespace
}  // namespace moe
