// Shared by the grouped backend's GPU suites: preset families scaled down, one backend run on
// host inputs (outputs poisoned first), and the comparison with the reference backend.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <initializer_list>
#include <string>

#include "backends/grouped/grouped_backend.h"
#include "backends/reference/reference_backend.h"
#include "common/gpu_test_util.h"
#include "common/test_util.h"
#include "core/compare.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "moe/moe.h"
#include "quant/tolerance.h"

namespace moe::testing {

inline void poison_device(const TensorView& t) {
  MOE_CUDA_CHECK(cudaMemset(t.data(), 0xFF, t.nbytes()));  // NaN in bf16/f16
}

inline MoeConfig scaled(const std::string& name, int hidden = 256, int inter = 128) {
  MoeConfig c = preset(name);
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.max_num_tokens = 512;
  if (c.num_shared_experts > 0) c.shared_intermediate_size = inter * c.num_shared_experts;
  if (c.routing.method == RoutingMethod::kDeepSeekV3) {
    c.num_experts = c.routing.num_groups == 1 ? 24 : 4 * c.routing.num_groups;
    c.top_k = std::min(c.top_k, 4);
  } else {
    c.num_experts = std::min(c.num_experts, 16);
    c.top_k = std::min(c.top_k, 4);
  }
  c.validate();
  return c;
}

// Runs the backend `entry` directly (run_moe) on host inputs; returns the host output.
// rows_in (GPU): run_moe gets x's act_dtype rows instead of quantize_input's output (a backend
// that quantizes_in_run_moe).
inline Tensor run_backend(const BackendEntry& entry, const MoeConfig& c, WeightSource& w,
                          const Tensor& x, const Routed& r, bool with_shared, bool gpu,
                          bool rows_in = false) {
  const DeviceInfo info = gpu ? DeviceInfo::detect() : DeviceInfo::cpu_only();
  auto backend = entry.create(c, Mapping{}, info);
  backend->create_weights();
  backend->load_weights(w, LoadMode::kVanilla);
  backend->post_load_weights();
  backend->process_weights_after_loading();
  const int64_t t = x.size(0);
  Tensor out_h = Tensor::empty({t, c.hidden_size}, c.act_dtype);
  if (!gpu) {
    fill_poison(out_h);
    RunMoeArgs a;
    a.x = backend->quantize_input(x, nullptr);
    a.topk_ids = r.ids;
    a.topk_weights = r.weights;
    a.out = out_h;
    a.with_shared = with_shared;
    backend->run_moe(a, nullptr);
    return out_h;
  }
  Tensor xd = to_device(x), ids = to_device(r.ids), wts = to_device(r.weights);
  Tensor out = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
  poison_device(out);
  RunMoeArgs a;
  if (rows_in) {
    MOE_CHECK(backend->quantizes_in_run_moe(), entry.name, " does not quantize inside run_moe");
    a.x = QuantizedInput{xd, {}};
  } else {
    a.x = backend->quantize_input(xd, nullptr);
  }
  a.topk_ids = ids;
  a.topk_weights = wts;
  a.out = out;
  a.with_shared = with_shared;
  backend->run_moe(a, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  return to_host(out);
}

inline void expect_matches_reference(const MoeConfig& c, int64_t t, uint64_t seed, int hot = -1) {
  auto w = make_random_weights(c, seed);
  const Tensor x = random_x(c, t, seed);
  const Routed r = random_routing(c, t, seed, hot);
  const bool shared = c.num_shared_experts > 0;
  const Tensor got = run_backend(grouped_backend_entry(), c, *w, x, r, shared, true);
  const Tensor want = run_backend(reference_backend_entry(), c, *w, x, r, shared, false);
  const double err = relative_l2(got, want);
  EXPECT_LE(err, layer_tolerance(c.quant)) << c.name << " T=" << t;
}

/// A forward of `layer` on device tensors x, logits -> out captured in a CUDA graph on a
/// stream of its own, after one eager warm-up forward on the same tensors (function
/// attributes, lazy loading). replay() launches the graph and waits for it.
class CapturedForward {
 public:
  CapturedForward(ConfigurableMoE& layer, const TensorView& x, const TensorView& logits,
                  const TensorView& out) {
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    layer.forward(x, logits, out, stream_);
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    MOE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    layer.forward(x, logits, out, stream_);
    MOE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph_));
    MOE_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  ~CapturedForward() {
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
    cudaStreamDestroy(stream_);
  }
  CapturedForward(const CapturedForward&) = delete;
  CapturedForward& operator=(const CapturedForward&) = delete;

  cudaStream_t stream() const { return stream_; }
  void replay() {
    MOE_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  cudaStream_t stream_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

/// The whole layer (router on the device included) built by the factory on `grouped`,
/// captured in a CUDA graph once and replayed on new inputs written into the same buffers,
/// each replay against the reference backend.
inline void expect_graph_replay_matches_reference(const MoeConfig& c, int64_t t,
                                                  uint64_t weight_seed,
                                                  std::initializer_list<uint64_t> seeds) {
  auto w = make_random_weights(c, weight_seed);
  MoeOptions go;
  go.backend = "grouped";
  auto layer = create_moe(c, {}, go).moe;
  layer->load_weights(*w);
  MoeOptions ro;
  ro.backend = "reference";
  auto ref = create_moe(c, {}, ro).moe;
  ref->load_weights(*w);

  Tensor x = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
  Tensor logits = Tensor::empty({t, c.num_experts}, DType::kF32, Device::cuda(0));
  Tensor out = Tensor::empty({t, c.hidden_size}, c.act_dtype, Device::cuda(0));
  copy_tensor(x, random_x(c, t, 1));
  copy_tensor(logits, random_routing(c, t, 1).logits);
  CapturedForward graph(*layer, x, logits, out);
  for (uint64_t seed : seeds) {
    const Tensor xh = random_x(c, t, seed);
    const Routed r = random_routing(c, t, seed);
    copy_tensor(x, xh);
    copy_tensor(logits, r.logits);
    poison_device(out);
    graph.replay();
    Tensor want = Tensor::empty({t, c.hidden_size}, c.act_dtype);
    ref->forward(xh, r.logits, want);
    EXPECT_LE(relative_l2(to_host(out), want), layer_tolerance(c.quant)) << "seed " << seed;
  }
}

}  // namespace moe::testing
