// The dense backend on the GPU against the reference backend (the CPU oracle): the same
// routing, fresh random inputs, the output poisoned first (or filled, when accumulating).
// Every preset scaled down x bf16 / fp8_per_tensor / fp8_block x 1..64 tokens; the
// with_routed / with_shared / accumulate variants; odd shapes and fp16; fused gate_up
// loading; inputs that are not the backend's own quantize_input buffers; CUDA-graph capture
// and replay; determinism.
#include "backends/dense/dense_backend.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "backends/reference/reference_backend.h"
#include "common/gpu_test_util.h"
#include "common/test_util.h"
#include "core/compare.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "moe/moe.h"
#include "quant/tolerance.h"
#include "routing/routing.h"

namespace moe {
namespace {

using testing::random_routing;
using testing::random_x;
using testing::Routed;
using testing::to_device;
using testing::to_host;

void poison_device(const TensorView& t) {
  MOE_CUDA_CHECK(cudaMemset(t.data(), 0xFF, t.nbytes()));  // NaN in bf16/f16
}

/// A preset scaled down to test size (at most 16 experts where the routing allows), in
/// `quant`.
MoeConfig scaled(const std::string& name, QuantMode quant, int hidden = 256, int inter = 128) {
  MoeConfig c = preset(name);
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.max_num_tokens = 64;
  c.quant = quant;
  c.act_dtype = quant == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
  if (c.num_shared_experts > 0) c.shared_intermediate_size = inter * c.num_shared_experts;
  if (c.routing.method == RoutingMethod::kDeepSeekV3) {
    c.num_experts = c.routing.num_groups == 1 ? 12 : 2 * c.routing.num_groups;
    c.top_k = std::min(c.top_k, 4);
    c.routing.topk_groups = std::min(c.routing.topk_groups, c.routing.num_groups);
  } else {
    c.num_experts = std::min(c.num_experts, 16);
    c.top_k = std::min(c.top_k, 4);
  }
  c.validate();
  return c;
}

/// A backend with its weights loaded.
std::unique_ptr<MoEBackend> make_backend(const BackendEntry& entry, const MoeConfig& c,
                                         WeightSource& w, bool gpu,
                                         LoadMode mode = LoadMode::kVanilla) {
  const DeviceInfo info = gpu ? DeviceInfo::detect() : DeviceInfo::cpu_only();
  const Capability cap = entry.can_implement(c, Mapping{}, info);
  MOE_CHECK(cap.ok, entry.name, " cannot run ", c.name, ": ", cap.reason);
  auto backend = entry.create(c, Mapping{}, info);
  backend->create_weights();
  backend->load_weights(w, mode);
  backend->post_load_weights();
  backend->process_weights_after_loading();
  return backend;
}

struct Call {
  bool with_routed = true;
  bool with_shared = false;
  bool accumulate = false;
  const Tensor* initial_out = nullptr;  // host, when accumulating
};

/// One run_moe of `backend` on host inputs; returns the host output.
Tensor run(MoEBackend& backend, const MoeConfig& c, const Tensor& x, const Routed& r,
           const Call& call) {
  const int64_t t = x.size(0);
  const bool gpu = backend.device().is_cuda();
  Tensor out_h = Tensor::empty({t, c.hidden_size}, c.act_dtype);
  if (call.initial_out != nullptr) {
    std::memcpy(out_h.data(), call.initial_out->data(), out_h.nbytes());
  } else {
    fill_poison(out_h);
  }
  RunMoeArgs a;
  a.with_routed = call.with_routed;
  a.with_shared = call.with_shared;
  a.accumulate = call.accumulate;
  if (!gpu) {
    a.x = backend.quantize_input(x, nullptr);
    a.topk_ids = r.ids;
    a.topk_weights = r.weights;
    a.out = out_h;
    backend.run_moe(a, nullptr);
    return out_h;
  }
  Tensor xd = to_device(x), ids = to_device(r.ids), wts = to_device(r.weights);
  Tensor out = to_device(out_h);
  a.x = backend.quantize_input(xd, nullptr);
  a.topk_ids = ids;
  a.topk_weights = wts;
  a.out = out;
  backend.run_moe(a, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  return to_host(out);
}

/// Runs `calls` token counts through one dense and one reference backend on the same weights.
void expect_matches_reference(const MoeConfig& c, const std::vector<int64_t>& tokens, uint64_t seed,
                              int hot = -1, LoadMode mode = LoadMode::kVanilla) {
  auto w = make_random_weights(c, seed);
  auto dense = make_backend(dense_backend_entry(), c, *w, true, mode);
  auto ref = make_backend(reference_backend_entry(), c, *w, false);
  Call call;
  call.with_shared = c.num_shared_experts > 0;
  for (int64_t t : tokens) {
    const Tensor x = random_x(c, t, seed + t);
    const Routed r = random_routing(c, t, seed + t, hot);
    const Tensor got = run(*dense, c, x, r, call);
    const Tensor want = run(*ref, c, x, r, call);
    EXPECT_LE(relative_l2(got, want), layer_tolerance(c.quant))
        << c.name << " " << quant_mode_name(c.quant) << " T=" << t;
  }
}

const std::vector<QuantMode> kQuants = {QuantMode::kBF16, QuantMode::kFP8PerTensor,
                                        QuantMode::kFP8Block};

class DenseFamily : public ::testing::TestWithParam<std::tuple<std::string, QuantMode>> {};

TEST_P(DenseFamily, MatchesReference) {
  MOE_REQUIRE_HOPPER();
  const auto& [name, quant] = GetParam();
  const MoeConfig c = scaled(name, quant);
  const Capability cap = dense_backend_entry().can_implement(c, Mapping{}, DeviceInfo::detect());
  if (!cap.ok) GTEST_SKIP() << cap.reason;
  expect_matches_reference(c, {1, 2, 3, 5, 8, 16, 33, 64}, 100);
}

INSTANTIATE_TEST_SUITE_P(Presets, DenseFamily,
                         ::testing::Combine(::testing::ValuesIn(preset_names()),
                                            ::testing::ValuesIn(kQuants)),
                         testing::PresetQuantName());

// Routed only, shared only (accumulating, as the scheduler runs it after combine), both
// accumulating, neither.
TEST(Dense, RoutedSharedAccumulateVariants) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : kQuants) {
    for (const char* name : {"deepseek-v3", "llama4-scout"}) {
      const MoeConfig c = scaled(name, q);
      SCOPED_TRACE(std::string(name) + " " + std::string(quant_mode_name(q)));
      auto w = make_random_weights(c, 9);
      auto dense = make_backend(dense_backend_entry(), c, *w, true);
      auto ref = make_backend(reference_backend_entry(), c, *w, false);
      for (int64_t t : {1, 6, 40}) {
        const Tensor x = random_x(c, t, 50 + t);
        const Routed r = random_routing(c, t, 50 + t);
        Tensor initial = Tensor::empty({t, c.hidden_size}, c.act_dtype);
        fill_normal(initial, stream_id(60 + t, 3));
        for (const Call& call :
             {Call{true, false, false, nullptr}, Call{false, true, true, &initial},
              Call{true, true, true, &initial}, Call{false, true, false, nullptr}}) {
          const Tensor got = run(*dense, c, x, r, call);
          const Tensor want = run(*ref, c, x, r, call);
          EXPECT_LE(relative_l2(got, want), layer_tolerance(q))
              << "T=" << t << " routed " << call.with_routed << " shared " << call.with_shared
              << " accumulate " << call.accumulate;
        }
        // Neither: out = 0, or out unchanged when accumulating.
        const Tensor zero = run(*dense, c, x, r, Call{false, false, false, nullptr});
        EXPECT_EQ(relative_l2(zero, run(*ref, c, x, r, Call{false, false, false, nullptr})), 0.0);
        const Tensor same = run(*dense, c, x, r, Call{false, false, true, &initial});
        EXPECT_EQ(std::memcmp(same.data(), initial.data(), initial.nbytes()), 0);
      }
    }
  }
}

TEST(Dense, EdgeShapes) {
  MOE_REQUIRE_HOPPER();
  // Every token on one expert (the others get zero tokens).
  expect_matches_reference(scaled("qwen3-30b-a3b", QuantMode::kFP8Block), {1, 37, 64}, 5, 3);
  // E, k, H, I none of them powers of two; 16-bit rows only 8-aligned.
  MoeConfig odd = scaled("mixtral-8x7b", QuantMode::kBF16, 200, 72);
  odd.num_experts = 5;
  odd.top_k = 3;
  expect_matches_reference(odd, {1, 7, 37}, 6);
  MoeConfig odd8 = scaled("mixtral-8x7b", QuantMode::kFP8PerTensor, 384, 256);
  odd8.num_experts = 3;
  expect_matches_reference(odd8, {1, 7, 13}, 7);
  MoeConfig odd_block = odd8;
  odd_block.quant = QuantMode::kFP8Block;
  expect_matches_reference(odd_block, {2, 9}, 8);
  expect_matches_reference(scaled("mixtral-8x7b", QuantMode::kFP16), {1, 20}, 9);
  // fp8 with f16 activations.
  MoeConfig f16_act = scaled("mixtral-8x7b", QuantMode::kFP8Block);
  f16_act.act_dtype = DType::kF16;
  expect_matches_reference(f16_act, {3, 16}, 10);
}

// More tokens than one pass of run_moe holds (256): the chunks reuse the buffers in order.
TEST(Dense, MoreTokensThanOnePass) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : kQuants) {
    MoeConfig c = scaled("deepseek-v2-lite", q);
    c.max_num_tokens = 600;
    expect_matches_reference(c, {300, 600}, 14);
  }
}

TEST(Dense, FusedGateUpLoading) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : kQuants) {
    expect_matches_reference(scaled("deepseek-v3", q), {4, 17}, 11, -1, LoadMode::kFusedGateUpProj);
    expect_matches_reference(scaled("gpt-oss-20b", q), {4}, 12, -1, LoadMode::kFusedGateUpProj);
  }
}

// run_moe on an input that is not the backend's own quantize_input buffers (e.g. a copy
// made by a communication step): the same bits as from its own buffers.
TEST(Dense, ForeignQuantizedInputGivesTheSameBits) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : kQuants) {
    const MoeConfig c = scaled("mixtral-8x7b", q);
    auto w = make_random_weights(c, 13);
    auto dense = make_backend(dense_backend_entry(), c, *w, true);
    const int64_t t = 11;
    Tensor xd = to_device(random_x(c, t, 14));
    const Routed r = random_routing(c, t, 14);
    Tensor ids = to_device(r.ids), wts = to_device(r.weights);
    Tensor out_own = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
    Tensor out_copy = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
    poison_device(out_own);
    poison_device(out_copy);
    RunMoeArgs a;
    a.x = dense->quantize_input(xd, nullptr);
    a.topk_ids = ids;
    a.topk_weights = wts;
    a.out = out_own;
    // Copies of the quantized input, made before run_moe.
    Tensor data = Tensor::empty(a.x.data.shape(), a.x.data.dtype(), Device::cuda(0));
    testing::copy_tensor(data, a.x.data);
    Tensor scales;
    if (!a.x.scales.empty()) {
      scales = Tensor::empty(a.x.scales.shape(), a.x.scales.dtype(), Device::cuda(0));
      testing::copy_tensor(scales, a.x.scales);
    }
    dense->run_moe(a, nullptr);
    RunMoeArgs b = a;
    b.x = {data, scales.defined() ? scales.view() : TensorView()};
    b.out = out_copy;
    // The backend's own buffers now hold another input.
    Tensor other = to_device(random_x(c, t, 15));
    dense->quantize_input(other, nullptr);
    dense->run_moe(b, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const Tensor own = to_host(out_own), copy = to_host(out_copy);
    EXPECT_EQ(std::memcmp(own.data(), copy.data(), own.nbytes()), 0) << quant_mode_name(q);
  }
}

TEST(Dense, DeterministicBits) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : kQuants) {
    const MoeConfig c = scaled("llama4-scout", q);
    auto w = make_random_weights(c, 3);
    auto dense = make_backend(dense_backend_entry(), c, *w, true);
    const Tensor x = random_x(c, 29, 3);
    const Routed r = random_routing(c, 29, 3);
    Call call;
    call.with_shared = true;
    const Tensor a = run(*dense, c, x, r, call);
    const Tensor b = run(*dense, c, x, r, call);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << quant_mode_name(q);
  }
}

// quantize_input + run_moe captured in a CUDA graph, replayed on new inputs written into
// the same device buffers.
TEST(Dense, CapturedInACudaGraph) {
  MOE_REQUIRE_HOPPER();
  for (QuantMode q : kQuants) {
    SCOPED_TRACE(quant_mode_name(q));
    const MoeConfig c = scaled("deepseek-v3", q);
    auto w = make_random_weights(c, 4);
    auto dense = make_backend(dense_backend_entry(), c, *w, true);
    auto ref = make_backend(reference_backend_entry(), c, *w, false);
    const int64_t t = 5;
    Tensor x = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
    Tensor ids = Tensor::empty({t, c.top_k}, DType::kI32, Device::cuda(0));
    Tensor wts = Tensor::empty({t, c.top_k}, DType::kF32, Device::cuda(0));
    Tensor out = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
    cudaStream_t stream;
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    auto forward = [&] {
      RunMoeArgs a;
      a.x = dense->quantize_input(x, stream);
      a.topk_ids = ids;
      a.topk_weights = wts;
      a.out = out;
      a.with_shared = true;
      dense->run_moe(a, stream);
    };
    // Warm-up outside capture (lazy loading, cuBLASLt's first call).
    const Routed r0 = random_routing(c, t, 1);
    testing::copy_tensor(x, random_x(c, t, 1));
    testing::copy_tensor(ids, r0.ids);
    testing::copy_tensor(wts, r0.weights);
    forward();
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream));

    cudaGraph_t graph;
    cudaGraphExec_t exec;
    MOE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    forward();
    MOE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    MOE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (uint64_t seed : {21, 22, 23}) {
      const Tensor xh = random_x(c, t, seed);
      const Routed r = random_routing(c, t, seed);
      testing::copy_tensor(x, xh);
      testing::copy_tensor(ids, r.ids);
      testing::copy_tensor(wts, r.weights);
      poison_device(out);
      MOE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
      MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
      Call call;
      call.with_shared = true;
      const Tensor want = run(*ref, c, xh, r, call);
      EXPECT_LE(relative_l2(to_host(out), want), layer_tolerance(q)) << "seed " << seed;
    }
    MOE_CUDA_CHECK(cudaGraphExecDestroy(exec));
    MOE_CUDA_CHECK(cudaGraphDestroy(graph));
    MOE_CUDA_CHECK(cudaStreamDestroy(stream));
  }
}

TEST(Dense, MisuseIsAnError) {
  MOE_REQUIRE_HOPPER();
  const MoeConfig c = scaled("mixtral-8x7b", QuantMode::kFP8Block);
  auto w = make_random_weights(c, 2);
  auto dense = dense_backend_entry().create(c, Mapping{}, DeviceInfo::detect());
  dense->create_weights();
  Tensor x = to_device(random_x(c, 4, 2));
  EXPECT_THROW(dense->quantize_input(x, nullptr), Error);  // before the weights are loaded
  dense->load_weights(*w, LoadMode::kVanilla);
  dense->post_load_weights();
  dense->process_weights_after_loading();
  Tensor big = to_device(random_x(c, c.max_num_tokens + 1, 2));
  EXPECT_THROW(dense->quantize_input(big, nullptr), Error);
  const Routed r = random_routing(c, 4, 2);
  Tensor ids = to_device(r.ids), wts = to_device(r.weights);
  Tensor out = Tensor::empty({4, c.hidden_size}, c.act_dtype, Device::cuda(0));
  RunMoeArgs a;
  a.x = dense->quantize_input(x, nullptr);
  a.topk_ids = ids;
  a.topk_weights = wts;
  a.out = out;
  a.with_shared = true;  // mixtral has no shared experts
  EXPECT_THROW(dense->run_moe(a, nullptr), Error);
  // A missing tensor names itself.
  testing::MapWeightSource partial;
  partial.copy_from(*w, c);
  partial.erase(2, Proj::kDown, Part::kScale);
  try {
    dense->load_weights(partial, LoadMode::kVanilla);
    ADD_FAILURE() << "expected a missing-tensor error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("experts.2.down_proj.weight_scale"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace moe
