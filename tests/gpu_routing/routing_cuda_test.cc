// The CUDA routing kernels against the CPU oracle (routing.h), on fresh random logits with
// the outputs poisoned first: every method over E in {8, 64, 128, 256, 384}, k in {1, 2, 4,
// 6, 8}, T in {1, 7, 64, 1000} (ids bit for bit, weights within 1e-6 relative); ties; strided
// views; the error flag (NaN, +inf, all -inf rows, a bad correction bias); T = 0; argument
// errors; the router projection for every dtype pair; and Router on a CUDA device end to end.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/gpu_test_util.h"
#include "common/test_util.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "moe/errors.h"
#include "quant/formats.h"
#include "routing/router.h"
#include "routing/routing.h"
#include "routing/routing_cuda.h"

namespace moe {
namespace {

using testing::to_device;
using testing::to_host;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kWeightRelTol = 1e-6;

template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string_view> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a moe::Error";
  } catch (const Error& e) {
    for (std::string_view part : parts) {
      EXPECT_NE(e.message().find(part), std::string::npos)
          << "message \"" << e.message() << "\" lacks \"" << part << "\"";
    }
  }
}

Tensor random_tensor(std::initializer_list<int64_t> shape, DType dtype, uint64_t stream,
                     float stddev = 1.0f) {
  Tensor t = Tensor::empty(shape, dtype);
  fill_normal(t, stream, stddev);
  return t;
}

// A device tensor full of poison (NaN / 0x7FFFFFFF), so that unwritten outputs show.
Tensor poisoned_device(std::initializer_list<int64_t> shape, DType dtype) {
  Tensor host = Tensor::empty(shape, dtype);
  fill_poison(host);
  return to_device(host);
}

// A device int32 error flag, zeroed.
class DeviceFlag {
 public:
  DeviceFlag() : flag_(Tensor::empty({1}, DType::kI32, Device::cuda(0))) {
    MOE_CUDA_CHECK(cudaMemset(flag_.data(), 0, sizeof(int32_t)));
  }
  int32_t* get() const { return flag_.data_as<int32_t>(); }
  /// Reads (and clears) the flag.
  int32_t take() { return read_routing_error_flag(get(), Device::cuda(0), /*clear=*/true); }

 private:
  Tensor flag_;
};

struct Routed {
  Tensor ids, weights;  // host
};

Routed route_on_cpu(const RoutingConfig& routing, int k, const TensorView& logits,
                    const Tensor& bias) {
  const int64_t num_tokens = logits.size(0);
  Routed r{Tensor::empty({num_tokens, k}, DType::kI32),
           Tensor::empty({num_tokens, k}, DType::kF32)};
  fill_poison(r.ids);
  fill_poison(r.weights);
  route_cpu(routing, k, logits, bias.defined() ? bias.view() : TensorView(), r.ids, r.weights);
  return r;
}

// route_cuda on device copies of host logits and bias; the host results.
Routed route_on_gpu(const RoutingConfig& routing, int k, const TensorView& logits,
                    const Tensor& bias, int32_t* flag) {
  const int64_t num_tokens = logits.size(0);
  const Tensor d_logits = to_device(logits);
  const Tensor d_bias = bias.defined() ? to_device(bias) : Tensor();
  const Tensor d_ids = poisoned_device({num_tokens, k}, DType::kI32);
  const Tensor d_weights = poisoned_device({num_tokens, k}, DType::kF32);
  route_cuda(routing, k, d_logits, d_bias.defined() ? d_bias.view() : TensorView(), d_ids,
             d_weights, flag, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  return {to_host(d_ids), to_host(d_weights)};
}

// ids bit for bit, weights within kWeightRelTol relative (rows [0, T) of both).
void expect_same_routing(const Routed& gpu, const Routed& cpu) {
  const int64_t n = cpu.ids.numel();
  ASSERT_EQ(gpu.ids.numel(), n);
  const int64_t k = cpu.ids.size(1);
  int reported = 0;
  for (int64_t i = 0; i < n && reported < 5; ++i) {
    const int32_t gid = gpu.ids.data_as<int32_t>()[i], cid = cpu.ids.data_as<int32_t>()[i];
    const float gw = gpu.weights.data_as<float>()[i], cw = cpu.weights.data_as<float>()[i];
    if (gid != cid) {
      ADD_FAILURE() << "token " << i / k << ", slot " << i % k << ": id " << gid << " (gpu) vs "
                    << cid << " (cpu)";
      ++reported;
    } else if (!(std::fabs(double(gw) - cw) <= kWeightRelTol * std::fabs(double(cw)))) {
      ADD_FAILURE() << "token " << i / k << ", slot " << i % k << " (expert " << cid << "): weight "
                    << gw << " (gpu) vs " << cw << " (cpu)";
      ++reported;
    }
  }
}

struct MethodCase {
  std::string name;
  RoutingConfig routing;
};

// The methods as the models configure them; DeepSeek-V3 grouping is fitted to E and k
// (groups of >= 2 experts, enough kept groups for k).
std::vector<MethodCase> method_cases(int num_experts, int k) {
  std::vector<MethodCase> cases;
  RoutingConfig softmax;
  softmax.method = RoutingMethod::kSoftmaxTopK;
  softmax.renormalize = true;
  cases.push_back({"softmax_renormalize", softmax});
  softmax.renormalize = false;
  softmax.routed_scaling_factor = 1.5f;
  cases.push_back({"softmax_scaled", softmax});

  RoutingConfig deepseek;
  deepseek.method = RoutingMethod::kDeepSeekV3;
  deepseek.renormalize = true;
  deepseek.has_correction_bias = true;
  deepseek.num_groups = num_experts >= 64 ? 8 : 4;
  deepseek.topk_groups = deepseek.num_groups / 2;
  while (k > deepseek.topk_groups * (num_experts / deepseek.num_groups)) ++deepseek.topk_groups;
  deepseek.routed_scaling_factor = 2.5f;
  cases.push_back({"deepseek_v3", deepseek});
  RoutingConfig kimi = deepseek;
  kimi.num_groups = kimi.topk_groups = 1;
  kimi.routed_scaling_factor = 2.827f;
  cases.push_back({"kimi_k2", kimi});
  RoutingConfig grouped_max = deepseek;  // DeepSeek-V2 style: group score = max, no bias
  grouped_max.has_correction_bias = false;
  grouped_max.renormalize = false;
  grouped_max.routed_scaling_factor = 1.0f;
  cases.push_back({"grouped_max_no_bias", grouped_max});

  RoutingConfig llama4;
  llama4.method = RoutingMethod::kLlama4;
  cases.push_back({"llama4", llama4});
  RoutingConfig gpt_oss;
  gpt_oss.method = RoutingMethod::kGptOss;
  cases.push_back({"gpt_oss", gpt_oss});
  return cases;
}

// ---- route_cuda against route_cpu -----------------------------------------------------------

TEST(RouteCuda, EveryMethodMatchesCpu) {
  MOE_REQUIRE_HOPPER();
  DeviceFlag flag;
  uint64_t stream = 0;
  // E = 72 and 96: DeepSeek-V3 groups that are not power-of-two runs of whole lanes (the
  // kernel's general group selection; the others take the lane-aligned one). k = 40: outputs
  // past the warp's 32 lanes.
  for (int num_experts : {8, 64, 72, 96, 128, 256, 384}) {
    for (int k : {1, 2, 4, 6, 8, 40}) {
      if (k > num_experts) continue;
      for (int64_t num_tokens : {1, 7, 64, 1000}) {
        const Tensor logits =
            random_tensor({num_tokens, num_experts}, DType::kF32, stream_id(700, ++stream), 2.0f);
        const Tensor bias =
            random_tensor({num_experts}, DType::kF32, stream_id(700, ++stream), 0.05f);
        for (const MethodCase& c : method_cases(num_experts, k)) {
          SCOPED_TRACE(::testing::Message()
                       << c.name << " E=" << num_experts << " k=" << k << " T=" << num_tokens);
          const Tensor b = c.routing.has_correction_bias ? bias : Tensor();
          expect_same_routing(route_on_gpu(c.routing, k, logits, b, flag.get()),
                              route_on_cpu(c.routing, k, logits, b));
          if (::testing::Test::HasFailure()) return;
        }
      }
    }
  }
  EXPECT_EQ(flag.take(), 0);
}

TEST(RouteCuda, TiesAreResolvedLikeTheCpu) {
  MOE_REQUIRE_HOPPER();
  DeviceFlag flag;
  uint64_t stream = 0;
  for (int num_experts : {8, 64, 96, 256, 384}) {
    constexpr int64_t kTokens = 48;
    // Logits on a coarse grid (many equal values), and special rows:
    //   0: all equal; 1: -200 / -150 (softmax probabilities underflow to equal zeros);
    //   2: -inf but one expert; 3: -inf but the last three (logit methods: -inf ties).
    Tensor logits = random_tensor({kTokens, num_experts}, DType::kF32, stream_id(710, ++stream));
    float* l = logits.data_as<float>();
    for (int64_t i = 0; i < logits.numel(); ++i) l[i] = std::round(l[i] * 1.5f) / 2.0f;
    for (int e = 0; e < num_experts; ++e) {
      l[e] = 0.25f;
      l[num_experts + e] = e % 3 == 0 ? -200.0f : -150.0f;
      l[2 * num_experts + e] = e == num_experts / 2 ? 1.0f : -kInf;
      l[3 * num_experts + e] = e >= num_experts - 3 ? 0.5f : -kInf;
    }
    Tensor coarse_bias = random_tensor({num_experts}, DType::kF32, stream_id(710, ++stream));
    for (int e = 0; e < num_experts; ++e) {
      coarse_bias.data_as<float>()[e] = std::round(coarse_bias.data_as<float>()[e] * 2.0f) / 8.0f;
    }
    Tensor zero_bias = Tensor::empty({num_experts}, DType::kF32);
    std::memset(zero_bias.data(), 0, zero_bias.nbytes());
    for (int k : {1, 4, 8}) {
      if (k > num_experts) continue;
      for (const MethodCase& c : method_cases(num_experts, k)) {
        for (const Tensor* bias : {&zero_bias, &coarse_bias}) {
          SCOPED_TRACE(::testing::Message()
                       << c.name << " E=" << num_experts << " k=" << k
                       << (bias == &zero_bias ? " zero bias" : " coarse bias"));
          const Tensor b = c.routing.has_correction_bias ? *bias : Tensor();
          expect_same_routing(route_on_gpu(c.routing, k, logits, b, flag.get()),
                              route_on_cpu(c.routing, k, logits, b));
          if (::testing::Test::HasFailure()) return;
        }
      }
    }
  }
  EXPECT_EQ(flag.take(), 0);
}

TEST(RouteCuda, StridedViewsAreReadAndWrittenInPlace) {
  MOE_REQUIRE_HOPPER();
  constexpr int64_t kT = 33, kE = 128, kPad = 5;
  constexpr int kK = 8;
  const Tensor logits = random_tensor({kT, kE}, DType::kF32, stream_id(720));
  RoutingConfig routing;  // softmax-topk, renormalized
  const Routed cpu = route_on_cpu(routing, kK, logits, Tensor());

  // Logits inside [T, E + kPad] rows; ids and weights as columns [kPad, kPad + k) of
  // [T, k + 2 kPad] buffers.
  std::vector<float> logit_rows(kT * (kE + kPad), kNaN);
  for (int64_t t = 0; t < kT; ++t) {
    std::memcpy(&logit_rows[t * (kE + kPad)], logits.data_as<float>() + t * kE, kE * 4);
  }
  constexpr int64_t kOutCols = kK + 2 * kPad;
  const Tensor d_logit_rows =
      to_device(TensorView(logit_rows.data(), DType::kF32, {kT, kE + kPad}));
  Tensor ids_host = Tensor::empty({kT, kOutCols}, DType::kI32);
  Tensor weights_host = Tensor::empty({kT, kOutCols}, DType::kF32);
  fill_poison(ids_host);
  fill_poison(weights_host);
  const Tensor d_ids = to_device(ids_host);
  const Tensor d_weights = to_device(weights_host);
  const int64_t logit_shape[] = {kT, kE}, logit_strides[] = {kE + kPad, 1};
  const int64_t out_shape[] = {kT, kK}, out_strides[] = {kOutCols, 1};
  const TensorView logits_view(d_logit_rows.data(), DType::kF32, logit_shape, logit_strides,
                               Device::cuda(0));
  const TensorView ids_view(d_ids.data_as<int32_t>() + kPad, DType::kI32, out_shape, out_strides,
                            Device::cuda(0));
  const TensorView weights_view(d_weights.data_as<float>() + kPad, DType::kF32, out_shape,
                                out_strides, Device::cuda(0));
  route_cuda(routing, kK, logits_view, {}, ids_view, weights_view, nullptr, nullptr);
  const Tensor ids = to_host(d_ids);
  const Tensor weights = to_host(d_weights);

  Routed gpu{Tensor::empty({kT, kK}, DType::kI32), Tensor::empty({kT, kK}, DType::kF32)};
  for (int64_t t = 0; t < kT; ++t) {
    for (int64_t j = 0; j < kOutCols; ++j) {
      const int32_t id = ids.data_as<int32_t>()[t * kOutCols + j];
      const float w = weights.data_as<float>()[t * kOutCols + j];
      if (j >= kPad && j < kPad + kK) {
        gpu.ids.data_as<int32_t>()[t * kK + j - kPad] = id;
        gpu.weights.data_as<float>()[t * kK + j - kPad] = w;
      } else {  // untouched
        EXPECT_EQ(id, ids_host.data_as<int32_t>()[0]) << "token " << t << " column " << j;
        EXPECT_TRUE(std::isnan(w)) << "token " << t << " column " << j;
      }
    }
  }
  expect_same_routing(gpu, cpu);
}

// ---- The error flag -------------------------------------------------------------------------

TEST(RouteCuda, BadLogitsSetTheFlagAndOutputsStayDefined) {
  MOE_REQUIRE_HOPPER();
  constexpr int64_t kT = 20, kE = 64;
  constexpr int kK = 4;
  DeviceFlag flag;
  Tensor logits = random_tensor({kT, kE}, DType::kF32, stream_id(730));
  float* l = logits.data_as<float>();
  l[9 * kE + 1] = kNaN;
  l[5 * kE + 10] = kInf;
  l[5 * kE + 3] = kNaN;  // the first bad entry in (token, expert) order
  for (const MethodCase& c : method_cases(kE, kK)) {
    SCOPED_TRACE(c.name);
    const Tensor bias = c.routing.has_correction_bias
                            ? random_tensor({kE}, DType::kF32, stream_id(731), 0.1f)
                            : Tensor();
    const Routed gpu = route_on_gpu(c.routing, kK, logits, bias, flag.get());
    const int32_t value = flag.take();
    EXPECT_EQ(value, 5 * kE + 3 + 1);
    const RoutingError error = decode_routing_error(value, kE);
    EXPECT_FALSE(error.ok);
    EXPECT_EQ(error.kind, RoutingError::Kind::kNaNLogit);
    EXPECT_EQ(error.token, 5);
    EXPECT_EQ(error.expert, 3);
    EXPECT_EQ(error.message(), "router logit of token 5, expert 3 is NaN");

    // Defined outputs: ids in range and distinct, weights finite (0 for the bad tokens);
    // the good tokens are routed as the CPU routes them.
    Tensor clean = testing::clone(logits);
    for (int64_t t : {5, 9}) {
      for (int64_t e = 0; e < kE; ++e) clean.data_as<float>()[t * kE + e] = 0.0f;
    }
    const Routed cpu = route_on_cpu(c.routing, kK, clean, bias);
    for (int64_t t = 0; t < kT; ++t) {
      for (int i = 0; i < kK; ++i) {
        const int32_t id = gpu.ids.data_as<int32_t>()[t * kK + i];
        const float w = gpu.weights.data_as<float>()[t * kK + i];
        ASSERT_TRUE(id >= 0 && id < kE) << "token " << t << " slot " << i << ": id " << id;
        for (int j = 0; j < i; ++j) EXPECT_NE(id, gpu.ids.data_as<int32_t>()[t * kK + j]);
        if (t == 5 || t == 9) {
          EXPECT_EQ(w, 0.0f) << "token " << t;
        } else {
          EXPECT_EQ(id, cpu.ids.data_as<int32_t>()[t * kK + i]) << "token " << t;
          EXPECT_NEAR(w, cpu.weights.data_as<float>()[t * kK + i],
                      kWeightRelTol * std::fabs(cpu.weights.data_as<float>()[t * kK + i]));
        }
      }
    }
  }
}

TEST(RouteCuda, ErrorKindsAndTheEarliestErrorAcrossLaunches) {
  MOE_REQUIRE_HOPPER();
  constexpr int64_t kT = 12, kE = 32;
  constexpr int kK = 2;
  DeviceFlag flag;
  RoutingConfig softmax;
  RoutingConfig llama4;
  llama4.method = RoutingMethod::kLlama4;

  Tensor logits = random_tensor({kT, kE}, DType::kF32, stream_id(740));
  logits.data_as<float>()[7 * kE + 30] = kInf;
  route_on_gpu(softmax, kK, logits, Tensor(), flag.get());
  RoutingError e = decode_routing_error(flag.take(), kE);
  EXPECT_EQ(e.kind, RoutingError::Kind::kPosInfLogit);
  EXPECT_EQ(e.token, 7);
  EXPECT_EQ(e.expert, 30);

  // An all -inf row: an error under a softmax, fine for Llama-4.
  Tensor neg = random_tensor({kT, kE}, DType::kF32, stream_id(741));
  for (int64_t e2 = 0; e2 < kE; ++e2) neg.data_as<float>()[4 * kE + e2] = -kInf;
  route_on_gpu(softmax, kK, neg, Tensor(), flag.get());
  e = decode_routing_error(flag.take(), kE);
  EXPECT_EQ(e.kind, RoutingError::Kind::kAllNegInfLogits);
  EXPECT_EQ(e.token, 4);
  EXPECT_NE(e.message().find("all -inf"), std::string::npos);
  expect_same_routing(route_on_gpu(llama4, kK, neg, Tensor(), flag.get()),
                      route_on_cpu(llama4, kK, neg, Tensor()));
  EXPECT_EQ(flag.take(), 0);

  // Two launches without clearing: the flag keeps the earliest (token, expert).
  Tensor late = random_tensor({kT, kE}, DType::kF32, stream_id(742));
  Tensor early = testing::clone(late);
  late.data_as<float>()[9 * kE + 2] = kNaN;
  early.data_as<float>()[2 * kE + 17] = kNaN;
  route_on_gpu(softmax, kK, late, Tensor(), flag.get());
  route_on_gpu(softmax, kK, early, Tensor(), flag.get());
  route_on_gpu(softmax, kK, late, Tensor(), flag.get());
  EXPECT_EQ(flag.take(), 2 * kE + 17 + 1);
  EXPECT_EQ(flag.take(), 0);  // cleared by the read

  // A non-finite correction bias (route_cpu rejects it up front).
  RoutingConfig deepseek;
  deepseek.method = RoutingMethod::kDeepSeekV3;
  deepseek.has_correction_bias = true;
  deepseek.num_groups = 4;
  deepseek.topk_groups = 2;
  Tensor bias = random_tensor({kE}, DType::kF32, stream_id(743), 0.1f);
  bias.data_as<float>()[21] = kInf;
  const Routed gpu = route_on_gpu(deepseek, kK, late.view().slice_rows(0, 4), bias, flag.get());
  e = decode_routing_error(flag.take(), kE);
  EXPECT_EQ(e.kind, RoutingError::Kind::kNonFiniteCorrectionBias);
  EXPECT_EQ(e.expert, 21);
  for (int64_t i = 0; i < gpu.ids.numel(); ++i) {
    EXPECT_TRUE(gpu.ids.data_as<int32_t>()[i] >= 0 && gpu.ids.data_as<int32_t>()[i] < kE);
  }
}

TEST(RouteCuda, ZeroTokensLaunchNothing) {
  MOE_REQUIRE_HOPPER();
  DeviceFlag flag;
  for (const MethodCase& c : method_cases(64, 4)) {
    SCOPED_TRACE(c.name);
    const Tensor logits = Tensor::empty({0, 64}, DType::kF32, Device::cuda(0));
    const Tensor ids = Tensor::empty({0, 4}, DType::kI32, Device::cuda(0));
    const Tensor weights = Tensor::empty({0, 4}, DType::kF32, Device::cuda(0));
    const Tensor bias = c.routing.has_correction_bias
                            ? to_device(random_tensor({64}, DType::kF32, stream_id(750)))
                            : Tensor();
    EXPECT_NO_THROW(route_cuda(c.routing, 4, logits, bias.defined() ? bias.view() : TensorView(),
                               ids, weights, flag.get(), nullptr));
  }
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(flag.take(), 0);
}

TEST(RouteCuda, RejectsWhatTheKernelCannotRoute) {
  MOE_REQUIRE_HOPPER();
  RoutingConfig softmax;
  const Tensor host_logits = random_tensor({4, 16}, DType::kF32, stream_id(760));
  const Tensor d_ids = Tensor::empty({4, 2}, DType::kI32, Device::cuda(0));
  const Tensor d_weights = Tensor::empty({4, 2}, DType::kF32, Device::cuda(0));
  expect_error([&] { route_cuda(softmax, 2, host_logits, {}, d_ids, d_weights, nullptr, nullptr); },
               {"router logits", "CUDA device"});
  const Tensor d_logits = to_device(host_logits);
  const Tensor host_ids = Tensor::empty({4, 2}, DType::kI32);
  expect_error([&] { route_cuda(softmax, 2, d_logits, {}, host_ids, d_weights, nullptr, nullptr); },
               {"topk_ids", "cuda:0"});
  expect_error([&] { route_cuda(softmax, 17, d_logits, {}, d_ids, d_weights, nullptr, nullptr); },
               {"top_k = 17"});
  const Tensor wide = Tensor::empty({4, 520}, DType::kF32, Device::cuda(0));
  expect_error([&] { route_cuda(softmax, 2, wide, {}, d_ids, d_weights, nullptr, nullptr); },
               {"at most 512 experts"});
  RoutingConfig many_groups;
  many_groups.method = RoutingMethod::kDeepSeekV3;
  many_groups.num_groups = 64;
  many_groups.topk_groups = 8;
  const Tensor logits128 = Tensor::empty({4, 128}, DType::kF32, Device::cuda(0));
  expect_error(
      [&] { route_cuda(many_groups, 2, logits128, {}, d_ids, d_weights, nullptr, nullptr); },
      {"routing.num_groups = 64"});
  RoutingConfig deepseek;
  deepseek.method = RoutingMethod::kDeepSeekV3;
  deepseek.has_correction_bias = true;
  expect_error([&] { route_cuda(deepseek, 2, d_logits, {}, d_ids, d_weights, nullptr, nullptr); },
               {"no correction bias"});
}

// ---- router_logits_cuda ---------------------------------------------------------------------

// |gpu - cpu| <= 1e-4 |cpu| + 1e-5 sum_h |x w|: 1e-4 relative, with a floor for logits whose
// terms cancel (the order of the fp32 sum differs between cuBLAS and the CPU).
void expect_logits_close(const Tensor& x, const Tensor& w, const Tensor& gpu, const Tensor& cpu) {
  const int64_t num_tokens = x.size(0), hidden = x.size(1), num_experts = w.size(0);
  auto element = [](const Tensor& t, int64_t i) -> double {
    switch (t.dtype()) {
      case DType::kF32:
        return t.data_as<const float>()[i];
      case DType::kBF16:
        return fmt::bf16_to_float(t.data_as<const uint16_t>()[i]);
      default:
        return fmt::f16_to_float(t.data_as<const uint16_t>()[i]);
    }
  };
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t e = 0; e < num_experts; ++e) {
      double magnitude = 0.0;
      for (int64_t h = 0; h < hidden; ++h) {
        magnitude += std::fabs(element(x, t * hidden + h) * element(w, e * hidden + h));
      }
      const double c = cpu.data_as<const float>()[t * num_experts + e];
      const double g = gpu.data_as<const float>()[t * num_experts + e];
      ASSERT_NEAR(g, c, 1e-4 * std::fabs(c) + 1e-5 * magnitude) << "token " << t << " expert " << e;
    }
  }
}

TEST(RouterLogitsCuda, EveryDtypePairMatchesCpu) {
  MOE_REQUIRE_HOPPER();
  uint64_t stream = 0;
  for (DType x_dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (DType w_dtype : {DType::kBF16, DType::kF32}) {
      for (bool with_bias : {false, true}) {
        for (int64_t num_tokens : {0, 1, 7, 300}) {
          // E = 72 and H = 1000 are not multiples of the kernel's 64 x 16 tiles.
          constexpr int64_t kE = 72, kH = 1000;
          SCOPED_TRACE(::testing::Message()
                       << "x " << dtype_name(x_dtype) << " w " << dtype_name(w_dtype) << " bias "
                       << with_bias << " T=" << num_tokens);
          const Tensor x = random_tensor({num_tokens, kH}, x_dtype, stream_id(770, ++stream));
          const Tensor w = random_tensor({kE, kH}, w_dtype, stream_id(770, ++stream), 0.03f);
          const Tensor bias = with_bias
                                  ? random_tensor({kE}, DType::kF32, stream_id(770, ++stream), 0.1f)
                                  : Tensor();
          Tensor cpu = Tensor::empty({num_tokens, kE}, DType::kF32);
          router_logits_cpu(x, w, bias.defined() ? bias.view() : TensorView(), cpu);
          const Tensor d_x = to_device(x), d_w = to_device(w);
          const Tensor d_bias = with_bias ? to_device(bias) : Tensor();
          const Tensor d_logits = poisoned_device({num_tokens, kE}, DType::kF32);
          router_logits_cuda(d_x, d_w, d_bias.defined() ? d_bias.view() : TensorView(), d_logits,
                             nullptr);
          expect_logits_close(x, w, to_host(d_logits), cpu);
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

// ---- Router on a CUDA device ----------------------------------------------------------------

struct RouterCase {
  std::string name;
  MoeConfig config;
  DType weight_dtype;
};

std::vector<RouterCase> router_cases() {
  std::vector<RouterCase> cases;
  MoeConfig deepseek = testing::small_config(256, 8, 512);
  deepseek.routing.method = RoutingMethod::kDeepSeekV3;
  deepseek.routing.has_correction_bias = true;
  deepseek.routing.num_groups = 8;
  deepseek.routing.topk_groups = 4;
  deepseek.routing.routed_scaling_factor = 2.5f;
  cases.push_back({"deepseek_v3_bf16", deepseek, DType::kBF16});
  MoeConfig qwen = testing::small_config(128, 8, 384);
  cases.push_back({"softmax_f32_weight", qwen, DType::kF32});
  MoeConfig gpt_oss = testing::small_config(32, 4, 288);
  gpt_oss.routing.method = RoutingMethod::kGptOss;
  gpt_oss.has_router_bias = true;
  cases.push_back({"gpt_oss_bias", gpt_oss, DType::kBF16});
  return cases;
}

TEST(RouterCuda, LoadComputeLogitsAndRouteMatchTheCpuRouter) {
  MOE_REQUIRE_HOPPER();
  uint64_t stream = 0;
  for (const RouterCase& c : router_cases()) {
    SCOPED_TRACE(c.name);
    const MoeConfig& config = c.config;
    const int64_t num_experts = config.num_experts, hidden = config.hidden_size;
    testing::MapWeightSource source;
    source.router_weight_tensor =
        random_tensor({num_experts, hidden}, c.weight_dtype, stream_id(780, ++stream), 1.0f / 16);
    if (config.has_router_bias) {
      source.router_bias_tensor =
          random_tensor({num_experts}, DType::kF32, stream_id(780, ++stream), 0.1f);
    }
    if (config.routing.has_correction_bias) {
      source.correction_bias_tensor =
          random_tensor({num_experts}, DType::kF32, stream_id(780, ++stream), 0.05f);
    }
    Router cpu_router(config, Device::cpu());
    Router gpu_router(config, Device::cuda(0));
    cpu_router.load(source);
    gpu_router.load(source);
    ASSERT_TRUE(gpu_router.has_weight());

    constexpr int64_t kT = 37;
    const int k = config.top_k;
    const Tensor x = random_tensor({kT, hidden}, DType::kBF16, stream_id(780, ++stream));
    Tensor cpu_logits = Tensor::empty({kT, num_experts}, DType::kF32);
    cpu_router.compute_logits(x, cpu_logits, nullptr);
    const Tensor d_x = to_device(x);
    const Tensor d_logits = poisoned_device({kT, num_experts}, DType::kF32);
    gpu_router.compute_logits(d_x, d_logits, nullptr);
    const Tensor gpu_logits = to_host(d_logits);
    expect_logits_close(x, source.router_weight_tensor, gpu_logits, cpu_logits);

    // Route the GPU's logits on both devices: identical ids.
    const Tensor d_ids = poisoned_device({kT, k}, DType::kI32);
    const Tensor d_weights = poisoned_device({kT, k}, DType::kF32);
    gpu_router.route(d_logits, d_ids, d_weights, nullptr);
    Routed cpu{Tensor::empty({kT, k}, DType::kI32), Tensor::empty({kT, k}, DType::kF32)};
    cpu_router.route(gpu_logits, cpu.ids, cpu.weights, nullptr);
    expect_same_routing({to_host(d_ids), to_host(d_weights)}, cpu);
    EXPECT_NO_THROW(gpu_router.check_errors());

    // A NaN logit: route() does not throw; check_errors() names it, then starts afresh.
    Tensor bad = testing::clone(gpu_logits);
    bad.data_as<float>()[3 * num_experts + 5] = kNaN;
    const Tensor d_bad = to_device(bad);
    gpu_router.route(d_bad, d_ids, d_weights, nullptr);
    expect_error([&] { gpu_router.check_errors(); }, {"token 3", "expert 5", "NaN"});
    EXPECT_NO_THROW(gpu_router.check_errors());

    // Host tensors given to the CUDA router.
    expect_error([&] { gpu_router.route(gpu_logits, d_ids, d_weights, nullptr); },
                 {"router logits", "CUDA device"});
    expect_error([&] { gpu_router.compute_logits(x, d_logits, nullptr); },
                 {"router input x", "CUDA device"});
  }
}

TEST(RouterCuda, RoutesWithoutARouterWeight) {
  MOE_REQUIRE_HOPPER();
  MoeConfig config = testing::small_config(64, 6, 128);
  config.routing.method = RoutingMethod::kLlama4;
  Router router(config, Device::cuda(0));
  testing::MapWeightSource empty;
  router.load(empty);
  EXPECT_FALSE(router.has_weight());
  const Tensor logits = random_tensor({9, 64}, DType::kF32, stream_id(790));
  const Tensor d_logits = to_device(logits);
  const Tensor d_ids = poisoned_device({9, 6}, DType::kI32);
  const Tensor d_weights = poisoned_device({9, 6}, DType::kF32);
  router.route(d_logits, d_ids, d_weights, nullptr);
  expect_same_routing({to_host(d_ids), to_host(d_weights)},
                      route_on_cpu(config.routing, 6, logits, Tensor()));
  expect_error(
      [&] {
        router.compute_logits(to_device(random_tensor({9, 128}, DType::kBF16, 1)), d_logits,
                              nullptr);
      },
      {"no router weight"});
}

}  // namespace
}  // namespace moe
