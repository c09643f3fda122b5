// The router projection (router_logits_cpu) and the Router class: loading from a
// WeightSource with its checks against the config, compute_logits against a naive double
// loop, route against route_cpu, and the error paths.
#include <gtest/gtest.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/test_util.h"
#include "core/random.h"
#include "moe/errors.h"
#include "quant/formats.h"
#include "routing/router.h"
#include "routing/routing.h"

namespace moe {
namespace {

using testing::expect_error;

Tensor random_tensor(std::initializer_list<int64_t> shape, DType dtype, uint64_t stream,
                     float stddev = 1.0f) {
  Tensor t = Tensor::empty(shape, dtype);
  fill_normal(t, stream, stddev);
  return t;
}

float element(const TensorView& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kF32:
      return t.data_as<const float>()[i];
    case DType::kBF16:
      return fmt::bf16_to_float(t.data_as<const uint16_t>()[i]);
    case DType::kF16:
      return fmt::f16_to_float(t.data_as<const uint16_t>()[i]);
    default:
      ADD_FAILURE() << "dtype " << dtype_name(t.dtype());
      return 0.0f;
  }
}

// A WeightSource that, like a checkpoint reader, hands out every tensor through one scratch
// buffer that the next call overwrites (poisoned first): a router that keeps a view instead
// of copying right away reads garbage.
class ScratchWeightSource : public WeightSource {
 public:
  Tensor weight, bias, correction;

  TensorView expert_tensor(int, Proj, Part) override { return {}; }
  TensorView router_weight() override { return hand_out(weight); }
  TensorView router_bias() override { return hand_out(bias); }
  TensorView correction_bias() override { return hand_out(correction); }
  std::string describe() const override { return "scratch test source"; }

 private:
  TensorView hand_out(const Tensor& t) {
    if (scratch_.defined()) std::memset(scratch_.data(), 0xFF, scratch_.nbytes());
    if (!t.defined()) return {};
    scratch_ = Tensor::empty({static_cast<int64_t>(t.nbytes()) + 64}, DType::kU8);
    std::memset(scratch_.data(), 0xFF, scratch_.nbytes());
    std::memcpy(scratch_.data(), t.data(), t.nbytes());
    return TensorView(scratch_.data(), t.dtype(), t.shape());
  }
  Tensor scratch_;
};

MoeConfig router_config(int num_experts, int top_k, int hidden) {
  MoeConfig c;
  c.name = "router-test";
  c.num_experts = num_experts;
  c.top_k = top_k;
  c.hidden_size = hidden;
  c.intermediate_size = 64;
  return c;
}

// logits[t, e] in double, and the scale sum_h |x w| + |b| that bounds the fp32 rounding.
void naive_logits(const TensorView& x, const TensorView& w, const TensorView& bias,
                  std::vector<double>& ref, std::vector<double>& scale) {
  const int64_t num_tokens = x.size(0), hidden = x.size(1), num_experts = w.size(0);
  ref.assign(num_tokens * num_experts, 0.0);
  scale.assign(num_tokens * num_experts, 0.0);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t e = 0; e < num_experts; ++e) {
      double acc = 0.0, mag = 0.0;
      for (int64_t h = 0; h < hidden; ++h) {
        const double p = double(element(x, t * hidden + h)) * element(w, e * hidden + h);
        acc += p;
        mag += std::fabs(p);
      }
      if (!bias.empty()) {
        acc += element(bias, e);
        mag += std::fabs(element(bias, e));
      }
      ref[t * num_experts + e] = acc;
      scale[t * num_experts + e] = mag;
    }
  }
}

// logits[t, e] summed in fp32 in order of h from 0.0f, then + bias: the documented order.
float ordered_logit(const TensorView& x, const TensorView& w, const TensorView& bias, int64_t t,
                    int64_t e) {
  const int64_t hidden = x.size(1);
  float acc = 0.0f;
  for (int64_t h = 0; h < hidden; ++h)
    acc += element(x, t * hidden + h) * element(w, e * hidden + h);
  return bias.empty() ? acc : acc + element(bias, e);
}

void expect_logits_match(const TensorView& x, const TensorView& w, const TensorView& bias,
                         const TensorView& logits) {
  std::vector<double> ref, scale;
  naive_logits(x, w, bias, ref, scale);
  const int64_t num_tokens = x.size(0), num_experts = w.size(0);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t e = 0; e < num_experts; ++e) {
      const float got = logits.data_as<const float>()[t * logits.stride(0) + e];
      ASSERT_NEAR(got, ref[t * num_experts + e], 1e-5 * scale[t * num_experts + e])
          << "token " << t << " expert " << e;
      ASSERT_EQ(std::bit_cast<uint32_t>(got),
                std::bit_cast<uint32_t>(ordered_logit(x, w, bias, t, e)))
          << "token " << t << " expert " << e << ": not the fp32 sum in order of h";
    }
  }
}

// ---- router_logits_cpu ----------------------------------------------------------------------

TEST(RouterLogits, EveryInputDtypeMatchesNaive) {
  // E = 21 is not a multiple of the 8-expert tile; H = 97 is odd.
  constexpr int64_t kT = 13, kE = 21, kH = 97;
  uint64_t stream = 0;
  for (DType x_dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (DType w_dtype : {DType::kBF16, DType::kF32}) {
      for (int bias_kind : {0, 1, 2}) {  // none, f32, bf16
        SCOPED_TRACE(::testing::Message() << "x " << dtype_name(x_dtype) << " w "
                                          << dtype_name(w_dtype) << " bias " << bias_kind);
        const Tensor x = random_tensor({kT, kH}, x_dtype, stream_id(600, ++stream));
        const Tensor w = random_tensor({kE, kH}, w_dtype, stream_id(600, ++stream), 0.1f);
        Tensor bias;
        if (bias_kind > 0) {
          bias = random_tensor({kE}, bias_kind == 1 ? DType::kF32 : DType::kBF16,
                               stream_id(600, ++stream), 0.1f);
        }
        Tensor logits = Tensor::empty({kT, kE}, DType::kF32);
        fill_poison(logits);
        router_logits_cpu(x, w, bias, logits);
        expect_logits_match(x, w, bias, logits);
      }
    }
  }
}

TEST(RouterLogits, StridedOutputAndZeroTokens) {
  constexpr int64_t kT = 5, kE = 16, kH = 64;
  const Tensor x = random_tensor({kT, kH}, DType::kBF16, stream_id(601));
  const Tensor w = random_tensor({kE, kH}, DType::kBF16, stream_id(602), 0.125f);
  std::vector<float> buffer(kT * (kE + 3), -3.0f);
  const int64_t shape[] = {kT, kE}, strides[] = {kE + 3, 1};
  const TensorView logits(buffer.data(), DType::kF32, shape, strides, Device::cpu());
  router_logits_cpu(x, w, {}, logits);
  expect_logits_match(x, w, {}, logits);
  for (int64_t t = 0; t < kT; ++t) {
    for (int64_t j = kE; j < kE + 3; ++j) EXPECT_EQ(buffer[t * (kE + 3) + j], -3.0f);
  }
  // T = 0: nothing to do, no error.
  EXPECT_NO_THROW(router_logits_cpu(x.view().slice_rows(0, 0), w, {},
                                    TensorView(buffer.data(), DType::kF32, {0, kE})));
}

TEST(RouterLogits, ModelSizedProjectionIsFast) {
  // T = 64, E = 128, H = 2048 (Qwen3-30B-A3B): a few milliseconds; bound loosely.
  constexpr int64_t kT = 64, kE = 128, kH = 2048;
  const Tensor x = random_tensor({kT, kH}, DType::kBF16, stream_id(603));
  const Tensor w = random_tensor({kE, kH}, DType::kBF16, stream_id(604), 0.02f);
  Tensor logits = Tensor::empty({kT, kE}, DType::kF32);
  router_logits_cpu(x, w, {}, logits);  // warm-up (thread pool start)
  const auto start = std::chrono::steady_clock::now();
  router_logits_cpu(x, w, {}, logits);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("router_logits_cpu T=%lld E=%lld H=%lld: %.2f ms\n", static_cast<long long>(kT),
              static_cast<long long>(kE), static_cast<long long>(kH), ms);
  EXPECT_LT(ms, 500.0);
  // Spot-check a few entries against the ordered sum.
  for (int64_t t : {0, 31, 63}) {
    for (int64_t e : {0, 77, 127}) {
      EXPECT_EQ(logits.data_as<float>()[t * kE + e], ordered_logit(x, w, {}, t, e));
    }
  }
}

TEST(RouterLogits, Errors) {
  const Tensor x = random_tensor({4, 32}, DType::kBF16, stream_id(605));
  const Tensor w = random_tensor({8, 32}, DType::kBF16, stream_id(606));
  const Tensor logits = Tensor::empty({4, 8}, DType::kF32);
  const Tensor w_wide = random_tensor({8, 33}, DType::kBF16, stream_id(607));
  expect_error([&] { router_logits_cpu(x, w_wide, {}, logits); }, {"hidden sizes", "33", "32"});
  expect_error(
      [&] {
        router_logits_cpu(x, w, {}, Tensor::empty({4, 9}, DType::kF32));
      },
      {"router logits", "[4, 8]"});
  expect_error(
      [&] {
        router_logits_cpu(x, w, {}, Tensor::empty({4, 8}, DType::kBF16));
      },
      {"router logits", "f32"});
  expect_error([&] { router_logits_cpu(x, w, Tensor::empty({9}, DType::kF32), logits); },
               {"router bias", "[8]"});
  expect_error(
      [&] {
        router_logits_cpu(Tensor::empty({4, 32}, DType::kE4M3), w, {}, logits);
      },
      {"router input x", "e4m3"});
  expect_error(
      [&] {
        router_logits_cpu(x, Tensor::empty({8, 32}, DType::kE4M3), {}, logits);
      },
      {"router weight", "e4m3"});
}

// ---- Router ----------------------------------------------------------------------------------

TEST(Router, LoadsAndComputesLogitsWithBias) {
  // GPT-OSS-like: router bias, bf16 weight, f32 bias.
  MoeConfig config = router_config(20, 4, 80);
  config.routing.method = RoutingMethod::kGptOss;
  config.has_router_bias = true;
  ScratchWeightSource source;
  source.weight = random_tensor({20, 80}, DType::kBF16, stream_id(700), 0.1f);
  source.bias = random_tensor({20}, DType::kBF16, stream_id(701), 0.1f);
  Router router(config, Device::cpu());
  EXPECT_FALSE(router.has_weight());
  router.load(source);
  EXPECT_TRUE(router.has_weight());

  const Tensor x = random_tensor({9, 80}, DType::kBF16, stream_id(702));
  Tensor logits = Tensor::empty({9, 20}, DType::kF32);
  fill_poison(logits);
  router.compute_logits(x, logits, nullptr);
  expect_logits_match(x, source.weight, source.bias, logits);

  // route() is route_cpu with the config's settings.
  Tensor ids = Tensor::empty({9, 4}, DType::kI32), weights = Tensor::empty({9, 4}, DType::kF32);
  Tensor ids_ref = Tensor::empty({9, 4}, DType::kI32);
  Tensor weights_ref = Tensor::empty({9, 4}, DType::kF32);
  fill_poison(ids);
  fill_poison(weights);
  router.route(logits, ids, weights, nullptr);
  route_cpu(config.routing, 4, logits, {}, ids_ref, weights_ref);
  EXPECT_EQ(std::memcmp(ids.data(), ids_ref.data(), ids.nbytes()), 0);
  EXPECT_EQ(std::memcmp(weights.data(), weights_ref.data(), weights.nbytes()), 0);
}

TEST(Router, F32WeightWithoutBias) {
  const MoeConfig config = router_config(16, 2, 48);
  ScratchWeightSource source;
  source.weight = random_tensor({16, 48}, DType::kF32, stream_id(710), 0.2f);
  Router router(config, Device::cpu());
  router.load(source);
  const Tensor x = random_tensor({6, 48}, DType::kF32, stream_id(711));
  Tensor logits = Tensor::empty({6, 16}, DType::kF32);
  fill_poison(logits);
  router.compute_logits(x, logits, nullptr);
  expect_logits_match(x, source.weight, {}, logits);
}

TEST(Router, DeepSeekRoutesWithTheLoadedCorrectionBias) {
  MoeConfig config = router_config(64, 6, 32);
  config.routing.method = RoutingMethod::kDeepSeekV3;
  config.routing.num_groups = 8;
  config.routing.topk_groups = 3;
  config.routing.has_correction_bias = true;
  config.routing.routed_scaling_factor = 2.5f;
  ScratchWeightSource source;
  source.weight = random_tensor({64, 32}, DType::kBF16, stream_id(720), 0.2f);
  source.correction = random_tensor({64}, DType::kF32, stream_id(721), 0.1f);
  Router router(config, Device::cpu());
  expect_error(
      [&] {
        router.route(Tensor::empty({1, 64}, DType::kF32), Tensor::empty({1, 6}, DType::kI32),
                     Tensor::empty({1, 6}, DType::kF32), nullptr);
      },
      {"correction bias", "call load"});
  router.load(source);

  Tensor logits = random_tensor({11, 64}, DType::kF32, stream_id(722));
  Tensor ids = Tensor::empty({11, 6}, DType::kI32), weights = Tensor::empty({11, 6}, DType::kF32);
  Tensor ids_ref = Tensor::empty({11, 6}, DType::kI32);
  Tensor weights_ref = Tensor::empty({11, 6}, DType::kF32);
  fill_poison(ids);
  fill_poison(weights);
  router.route(logits, ids, weights, nullptr);
  route_cpu(config.routing, 6, logits, source.correction, ids_ref, weights_ref);
  EXPECT_EQ(std::memcmp(ids.data(), ids_ref.data(), ids.nbytes()), 0);
  EXPECT_EQ(std::memcmp(weights.data(), weights_ref.data(), weights.nbytes()), 0);
  // Routing without the bias would differ somewhere: the bias really is used.
  RoutingConfig no_bias = config.routing;
  no_bias.has_correction_bias = false;
  route_cpu(no_bias, 6, logits, {}, ids_ref, weights_ref);
  EXPECT_NE(std::memcmp(ids.data(), ids_ref.data(), ids.nbytes()), 0);
}

TEST(Router, LogitsWithoutAWeight) {
  // A source without the router weight is fine (the caller passes logits) ...
  const MoeConfig config = router_config(8, 2, 16);
  ScratchWeightSource source;
  Router router(config, Device::cpu());
  router.load(source);
  EXPECT_FALSE(router.has_weight());
  // ... but compute_logits then says so.
  expect_error(
      [&] {
        router.compute_logits(Tensor::empty({2, 16}, DType::kBF16),
                              Tensor::empty({2, 8}, DType::kF32), nullptr);
      },
      {"no router weight"});
  Tensor logits = random_tensor({3, 8}, DType::kF32, stream_id(730));
  Tensor ids = Tensor::empty({3, 2}, DType::kI32), weights = Tensor::empty({3, 2}, DType::kF32);
  EXPECT_NO_THROW(router.route(logits, ids, weights, nullptr));
}

TEST(Router, LoadErrors) {
  MoeConfig config = router_config(8, 2, 16);
  const Tensor weight = random_tensor({8, 16}, DType::kBF16, stream_id(740));

  {  // has_router_bias, weight without bias
    MoeConfig c = config;
    c.has_router_bias = true;
    ScratchWeightSource s;
    s.weight = weight;
    Router router(c, Device::cpu());
    expect_error([&] { router.load(s); },
                 {"has_router_bias", "no router bias", "scratch test source"});
  }
  {  // a router bias the config does not have
    ScratchWeightSource s;
    s.weight = weight;
    s.bias = random_tensor({8}, DType::kF32, stream_id(741));
    Router router(config, Device::cpu());
    expect_error([&] { router.load(s); }, {"router bias", "has_router_bias is false"});
  }
  {  // router bias of the wrong size
    MoeConfig c = config;
    c.has_router_bias = true;
    ScratchWeightSource s;
    s.weight = weight;
    s.bias = random_tensor({7}, DType::kF32, stream_id(742));
    Router router(c, Device::cpu());
    expect_error([&] { router.load(s); }, {"router bias", "[7]", "num_experts = 8"});
  }
  {  // weight of the wrong shape and dtype
    ScratchWeightSource s;
    s.weight = random_tensor({8, 17}, DType::kBF16, stream_id(743));
    Router router(config, Device::cpu());
    expect_error([&] { router.load(s); }, {"router weight", "hidden_size = 16", "[8, 17]"});
    s.weight = Tensor::empty({8, 16}, DType::kE4M3);
    expect_error([&] { router.load(s); }, {"router weight", "bf16 or f32", "e4m3"});
  }
  MoeConfig ds = config;
  ds.routing.method = RoutingMethod::kDeepSeekV3;
  ds.routing.num_groups = 2;
  ds.routing.topk_groups = 1;
  ds.routing.has_correction_bias = true;
  {  // DeepSeek-V3 with has_correction_bias, no bias in the source
    ScratchWeightSource s;
    s.weight = weight;
    Router router(ds, Device::cpu());
    expect_error([&] { router.load(s); }, {"has_correction_bias", "no correction bias", "f32[8]"});
  }
  {  // a correction bias the config does not use
    ScratchWeightSource s;
    s.weight = weight;
    s.correction = random_tensor({8}, DType::kF32, stream_id(744));
    Router router(config, Device::cpu());
    expect_error([&] { router.load(s); }, {"correction bias"});
  }
  {  // correction bias: wrong dtype, wrong size, NaN
    ScratchWeightSource s;
    s.weight = weight;
    s.correction = random_tensor({8}, DType::kBF16, stream_id(745));
    Router router(ds, Device::cpu());
    expect_error([&] { router.load(s); }, {"correction bias", "bf16"});
    s.correction = random_tensor({6}, DType::kF32, stream_id(746));
    expect_error([&] { router.load(s); }, {"correction bias", "[6]"});
    s.correction = random_tensor({8}, DType::kF32, stream_id(747));
    s.correction.data_as<float>()[2] = std::numeric_limits<float>::quiet_NaN();
    expect_error([&] { router.load(s); }, {"correction bias", "expert 2"});
  }
}

TEST(Router, FailedLoadKeepsThePreviousWeights) {
  MoeConfig config = router_config(8, 2, 16);
  ScratchWeightSource good;
  good.weight = random_tensor({8, 16}, DType::kF32, stream_id(750));
  Router router(config, Device::cpu());
  router.load(good);
  ScratchWeightSource bad;
  bad.weight = random_tensor({8, 16}, DType::kF32, stream_id(751));
  bad.bias = random_tensor({8}, DType::kF32, stream_id(752));  // config has no router bias
  EXPECT_THROW(router.load(bad), Error);
  ASSERT_TRUE(router.has_weight());
  const Tensor x = random_tensor({3, 16}, DType::kF32, stream_id(753));
  Tensor logits = Tensor::empty({3, 8}, DType::kF32);
  router.compute_logits(x, logits, nullptr);
  expect_logits_match(x, good.weight, {}, logits);
}

TEST(Router, ShapeErrorsAgainstTheConfig) {
  MoeConfig config = router_config(8, 2, 16);
  ScratchWeightSource s;
  s.weight = random_tensor({8, 16}, DType::kBF16, stream_id(760));
  Router router(config, Device::cpu());
  router.load(s);
  expect_error(
      [&] {
        router.compute_logits(Tensor::empty({2, 15}, DType::kBF16),
                              Tensor::empty({2, 8}, DType::kF32), nullptr);
      },
      {"hidden_size = 16", "[2, 15]"});
  expect_error(
      [&] {
        router.route(random_tensor({2, 9}, DType::kF32, stream_id(761)),
                     Tensor::empty({2, 2}, DType::kI32), Tensor::empty({2, 2}, DType::kF32),
                     nullptr);
      },
      {"num_experts = 8", "[2, 9]"});
}

#ifndef MOE_HAVE_CUDA
// Without CUDA, a Router on a GPU says so (with CUDA, tests/gpu_routing covers it).
TEST(Router, CudaDeviceIsNotBuiltYet) {
  const MoeConfig config = router_config(8, 2, 16);
  Router router(config, Device::cuda(0));
  ScratchWeightSource s;
  expect_error([&] { router.load(s); }, {"CUDA routing kernels", "cuda:0"});
  expect_error(
      [&] {
        router.route(Tensor::empty({1, 8}, DType::kF32), Tensor::empty({1, 2}, DType::kI32),
                     Tensor::empty({1, 2}, DType::kF32), nullptr);
      },
      {"CUDA routing kernels"});
  expect_error(
      [&] {
        router.compute_logits(Tensor::empty({1, 16}, DType::kBF16),
                              Tensor::empty({1, 8}, DType::kF32), nullptr);
      },
      {"CUDA routing kernels"});
}
#endif

}  // namespace
}  // namespace moe
