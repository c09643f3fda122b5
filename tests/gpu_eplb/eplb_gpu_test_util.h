// Helpers of the GPU EPLB suites (static mode: eplb_gpu_test.cc, online mode:
// eplb_online_gpu_test.cc): grouped layers with a placement, one poisoned forward, and the
// (preset, quant) fixture both suites run over.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda_check.h"
#include "gpu_grouped/grouped_test_util.h"

namespace moe::testing {

/// A grouped layer loaded with `w`: without EPLB (empty placement), in static mode, or in
/// online mode (a re-placement only when asked: interval 1000, window 64).
inline std::unique_ptr<ConfigurableMoE> make_eplb_layer(const MoeConfig& c, WeightSource& w,
                                                        const std::vector<int32_t>& slot_to_expert,
                                                        bool online = false) {
  MoeOptions options;
  options.backend = "grouped";
  options.eplb_slot_to_expert = slot_to_expert;
  if (online) {
    options.eplb_online.rebalance_interval = 1000;
    options.eplb_online.window = 64;
  }
  auto layer = create_moe(c, {}, options).moe;
  layer->load_weights(w);
  return layer;
}

/// One forward on device copies of host inputs (logits undefined: computed from the router
/// weight); the output poisoned first, returned on the host.
inline Tensor run_eplb_forward(ConfigurableMoE& layer, const Tensor& x_host,
                               const Tensor& logits_host) {
  const MoeConfig& c = layer.config();
  const Tensor x = to_device(x_host);
  const Tensor logits = logits_host.defined() ? to_device(logits_host) : Tensor();
  Tensor out = Tensor::empty({x_host.size(0), c.hidden_size}, c.act_dtype, Device::cuda(0));
  poison_device(out);
  layer.forward(x, logits.defined() ? logits.view() : TensorView(), out);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  return to_host(out);
}

/// A scaled preset in a quant mode; skips without a Hopper GPU or where the grouped backend
/// cannot run it (its reason).
class EplbGpuFixture : public ::testing::TestWithParam<std::tuple<std::string, QuantMode>> {
 protected:
  void SetUp() override {
    MOE_REQUIRE_HOPPER();
    const auto& [name, quant] = GetParam();
    config_ = scaled(name);
    config_.quant = quant;
    config_.validate();
    const Capability cap =
        grouped_backend_entry().can_implement(config_, Mapping{}, DeviceInfo::detect());
    if (!cap.ok) GTEST_SKIP() << "grouped backend: " << cap.reason;
  }
  MoeConfig config_;
};

/// The parameters both suites run over: Qwen3- and DeepSeek-V3-style, bf16 and fp8_block.
inline auto eplb_gpu_cases() {
  return ::testing::Combine(::testing::Values("qwen3-30b-a3b", "deepseek-v3"),
                            ::testing::Values(QuantMode::kBF16, QuantMode::kFP8Block));
}

}  // namespace moe::testing
