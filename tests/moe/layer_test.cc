// The assembled layer: factory decisions and reasons, the scheduler's chunking against one
// big forward, the whole layer against a naive composition of the model's definition
// (router projection -> routing -> experts -> shared experts) for every model family, and
// bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/compare.h"
#include "core/random.h"
#include "moe/moe.h"
#include "quant/formats.h"
#include "routing/routing.h"

namespace moe {
namespace {

using testing::clone;

/// A family's preset, scaled down so that a forward takes milliseconds.
MoeConfig scaled_preset(const std::string& name) {
  MoeConfig c = preset(name);
  c.hidden_size = 256;
  c.intermediate_size = 128;
  c.max_num_tokens = 64;
  if (c.num_shared_experts > 0) c.shared_intermediate_size = 128 * c.num_shared_experts;
  if (c.routing.method == RoutingMethod::kDeepSeekV3) {
    c.num_experts = c.routing.num_groups == 1 ? 24 : 4 * c.routing.num_groups;  // groups of 4
    c.top_k = std::min(c.top_k, 4);
  } else {
    c.num_experts = std::min(c.num_experts, 16);
    c.top_k = std::min(c.top_k, 4);
  }
  c.validate();
  return c;
}

using testing::random_x;

std::unique_ptr<ConfigurableMoE> make_layer(const MoeConfig& c, WeightSource& w) {
  auto moe = create_moe(c).moe;
  moe->load_weights(w);
  return moe;
}

Tensor run(ConfigurableMoE& moe, const Tensor& x, const TensorView& logits = {}) {
  Tensor out = Tensor::empty({x.size(0), moe.config().hidden_size}, moe.config().act_dtype);
  fill_poison(out);
  moe.forward(x, logits, out);
  return out;
}

using testing::bit_identical;

// ---- Naive layer: the model's definition written out, bf16 weights ----------------------

std::vector<double> matrix(WeightSource& w, int expert, Proj p) {
  TensorView t = w.expert_tensor(expert, p, Part::kWeight);
  EXPECT_EQ(t.dtype(), DType::kBF16);
  std::vector<double> m(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) m[i] = fmt::bf16_to_float(t.data_as<uint16_t>()[i]);
  return m;
}

std::vector<double> bias(WeightSource& w, int expert, Proj p, int64_t n) {
  TensorView t = w.expert_tensor(expert, p, Part::kBias);
  std::vector<double> b(n, 0.0);
  if (t.empty()) return b;
  const std::vector<double> v = to_doubles(t);
  std::copy(v.begin(), v.end(), b.begin());
  return b;
}

// y = W2 act(W1 v + b1, W3 v + b3) + b2, the intermediate rounded to bf16 as a bf16 model does.
std::vector<double> naive_expert(const MoeConfig& c, WeightSource& w, int expert,
                                 const std::vector<double>& v) {
  const int64_t h = c.hidden_size;
  const int64_t inter = expert == kSharedExpert ? c.shared_intermediate_size : c.intermediate_size;
  const auto w1 = matrix(w, expert, Proj::kGate), w3 = matrix(w, expert, Proj::kUp),
             w2 = matrix(w, expert, Proj::kDown);
  const auto b1 = bias(w, expert, Proj::kGate, inter), b3 = bias(w, expert, Proj::kUp, inter),
             b2 = bias(w, expert, Proj::kDown, h);
  std::vector<double> act(inter);
  for (int64_t i = 0; i < inter; ++i) {
    double g = b1[i], u = b3[i];
    for (int64_t j = 0; j < h; ++j) {
      g += w1[i * h + j] * v[j];
      u += w3[i * h + j] * v[j];
    }
    double a;
    if (c.activation == Activation::kSwiGLU) {
      a = g / (1.0 + std::exp(-g)) * u;
    } else {
      const double limit = c.swiglu_oai.limit, alpha = c.swiglu_oai.alpha;
      g = std::min(g, limit);
      u = std::clamp(u, -limit, limit);
      a = (u + 1.0) * g / (1.0 + std::exp(-alpha * g));
    }
    act[i] = fmt::round_bf16(static_cast<float>(a));
  }
  std::vector<double> y(h);
  for (int64_t j = 0; j < h; ++j) {
    double s = b2[j];
    for (int64_t i = 0; i < inter; ++i) s += w2[j * inter + i] * act[i];
    y[j] = s;
  }
  return y;
}

Tensor naive_layer(const MoeConfig& c, WeightSource& w, const Tensor& x) {
  const int64_t t_count = x.size(0), h = c.hidden_size, k = c.top_k;
  Tensor logits = Tensor::empty({t_count, c.num_experts}, DType::kF32);
  router_logits_cpu(x, w.router_weight(), w.router_bias(), logits);
  Tensor ids = Tensor::empty({t_count, k}, DType::kI32),
         wts = Tensor::empty({t_count, k}, DType::kF32);
  route_cpu(c.routing, k, logits, w.correction_bias(), ids, wts);
  Tensor out = Tensor::empty({t_count, h}, DType::kBF16);
  const std::vector<double> xs = to_doubles(x);
  for (int64_t t = 0; t < t_count; ++t) {
    const std::vector<double> xt(xs.begin() + t * h, xs.begin() + (t + 1) * h);
    std::vector<double> acc(h, 0.0);
    for (int64_t j = 0; j < k; ++j) {
      const int e = ids.data_as<int32_t>()[t * k + j];
      const double wt = wts.data_as<float>()[t * k + j];
      std::vector<double> in = xt;
      if (c.apply_router_weight_on_input) {  // Llama-4: bf16(x * w) goes into the expert
        for (auto& v : in) v = fmt::round_bf16(static_cast<float>(v * static_cast<float>(wt)));
      }
      const auto y = naive_expert(c, w, e, in);
      for (int64_t i = 0; i < h; ++i) acc[i] += (c.apply_router_weight_on_input ? 1.0 : wt) * y[i];
    }
    if (c.num_shared_experts > 0) {
      const auto s = naive_expert(c, w, kSharedExpert, xt);
      for (int64_t i = 0; i < h; ++i) {
        // Llama-4 adds two bf16 tensors; DeepSeek sums inside one accumulation.
        acc[i] = c.apply_router_weight_on_input ? fmt::round_bf16(static_cast<float>(acc[i])) + s[i]
                                                : acc[i] + s[i];
      }
    }
    for (int64_t i = 0; i < h; ++i) {
      out.data_as<uint16_t>()[t * h + i] = fmt::float_to_bf16(static_cast<float>(acc[i]));
    }
  }
  return out;
}

class LayerFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(LayerFamily, MatchesTheModelsDefinition) {
  const MoeConfig c = scaled_preset(GetParam());
  auto weights = make_random_weights(c, 7);
  auto moe = make_layer(c, *weights);
  const Tensor x = random_x(c, 19, 11);
  const Tensor out = run(*moe, x);
  const Tensor ref = naive_layer(c, *weights, x);
  const double err = relative_l2(out, ref);
  // Both sides are float64 oracles of the same bf16 model; they differ in summation order
  // and in an occasional bf16 rounding of the intermediate.
  EXPECT_LT(err, 2e-3) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(AllPresets, LayerFamily, ::testing::ValuesIn(preset_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) ch = std::isalnum(ch) ? ch : '_';
                           return n;
                         });

// ---- Scheduler chunking ------------------------------------------------------------------

TEST(Layer, ChunkingEqualsOneBigForward) {
  MoeConfig small = scaled_preset("deepseek-v3");  // shared experts + grouped routing
  small.max_num_tokens = 8;
  MoeConfig big = small;
  big.max_num_tokens = 64;
  auto weights = make_random_weights(small, 3);
  auto chunked = make_layer(small, *weights);
  auto whole = make_layer(big, *weights);
  for (int64_t t : {0, 1, 8, 9, 3 * 8 + 7}) {
    const Tensor x = random_x(small, t, 100 + t);
    EXPECT_TRUE(bit_identical(run(*chunked, x), run(*whole, x))) << "T = " << t;
  }
  EXPECT_EQ(chunked->iteration(), 5);
}

TEST(Layer, GivenLogitsEqualComputedLogits) {
  const MoeConfig c = scaled_preset("qwen3-30b-a3b");
  auto weights = make_random_weights(c, 5);
  auto moe = make_layer(c, *weights);
  const Tensor x = random_x(c, 12, 9);
  Tensor logits = Tensor::empty({12, c.num_experts}, DType::kF32);
  router_logits_cpu(x, weights->router_weight(), {}, logits);
  EXPECT_TRUE(bit_identical(run(*moe, x), run(*moe, x, logits)));
}

TEST(Layer, ReloadChangesTheOutput) {
  const MoeConfig c = scaled_preset("mixtral-8x7b");
  auto w1 = make_random_weights(c, 1);
  auto w2 = make_random_weights(c, 2);
  auto moe = make_layer(c, *w1);
  const Tensor x = random_x(c, 6, 4);
  const Tensor first = run(*moe, x);
  moe->reload_weights(*w2);
  const Tensor second = run(*moe, x);
  EXPECT_GT(relative_l2(second, first), 0.1);
  auto fresh = make_layer(c, *w2);
  EXPECT_TRUE(bit_identical(second, run(*fresh, x)));
}

// ---- Factory -------------------------------------------------------------------------------

TEST(Factory, AutoChoosesAndReportsEveryCandidate) {
  auto [moe, report] = create_moe(preset("qwen3-30b-a3b"));
  ASSERT_NE(moe, nullptr);
  EXPECT_EQ(report.requested_backend, "auto");
  EXPECT_EQ(report.backend, moe->backend_name());
  EXPECT_EQ(report.backends.size(), backend_names().size());
  int chosen = 0;
  for (const auto& c : report.backends) {
    EXPECT_FALSE(c.reason.empty()) << c.name << " has no reason";
    chosen += c.chosen;
  }
  EXPECT_EQ(chosen, 1);
  EXPECT_EQ(report.communication, "local");
  EXPECT_NE(report.str().find("[chosen]"), std::string::npos);
}

TEST(Factory, UnknownBackendListsTheBuiltOnes) {
  MoeOptions o;
  o.backend = "no-such-backend";
  try {
    create_moe(preset("mixtral-8x7b"), {}, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown backend 'no-such-backend'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("reference"), std::string::npos);
  }
}

TEST(Factory, ExpertParallelWithoutAStrategySaysWhy) {
  Mapping m;
  m.ep_size = 2;
  try {
    create_moe(preset("qwen3-30b-a3b"), m);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ep_size 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("local"), std::string::npos) << e.what();
  }
}

TEST(Factory, InvalidConfigIsRejectedBeforeAnything) {
  MoeConfig c = preset("mixtral-8x7b");
  c.top_k = 9;  // k > E
  EXPECT_THROW(create_moe(c), Error);
  Mapping m;
  m.ep_rank = 3;
  EXPECT_THROW(create_moe(preset("mixtral-8x7b"), m), Error);
}

// ---- Bad inputs ---------------------------------------------------------------------------

void expect_error_mentions(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Layer, BadInputsGiveClearErrors) {
  const MoeConfig c = scaled_preset("qwen3-30b-a3b");
  auto weights = make_random_weights(c, 5);
  auto unloaded = create_moe(c).moe;
  const Tensor x = random_x(c, 4, 1);
  Tensor out = Tensor::empty({4, c.hidden_size}, c.act_dtype);
  expect_error_mentions([&] { unloaded->forward(x, {}, out); }, "before load_weights");

  auto moe = make_layer(c, *weights);
  Tensor wrong_h = Tensor::empty({4, c.hidden_size + 1}, c.act_dtype);
  expect_error_mentions([&] { moe->forward(wrong_h, {}, out); }, "x: expected [T, 256]");
  Tensor wrong_dtype = Tensor::empty({4, c.hidden_size}, DType::kF32);
  expect_error_mentions([&] { moe->forward(wrong_dtype, {}, out); }, "expected bf16");
  Tensor short_out = Tensor::empty({3, c.hidden_size}, c.act_dtype);
  expect_error_mentions([&] { moe->forward(x, {}, short_out); }, "out: expected");
  Tensor bad_logits = Tensor::empty({4, c.num_experts - 1}, DType::kF32);
  expect_error_mentions([&] { moe->forward(x, bad_logits, out); }, "router_logits");

  Tensor logits = Tensor::empty({4, c.num_experts}, DType::kF32);
  fill_normal(logits, 3);
  logits.data_as<float>()[2 * c.num_experts + 5] = std::nanf("");
  expect_error_mentions([&] { moe->forward(x, logits, out); }, "NaN");
}

TEST(Layer, ZeroTokens) {
  const MoeConfig c = scaled_preset("deepseek-v3");
  auto weights = make_random_weights(c, 5);
  auto moe = make_layer(c, *weights);
  const Tensor x = random_x(c, 0, 1);
  EXPECT_EQ(run(*moe, x).numel(), 0);
}

}  // namespace
}  // namespace moe
