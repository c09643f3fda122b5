// Example 01: one MoE layer on the CPU.
//
// The smallest program that uses MoE Engine: describe a layer (MoeConfig), let the factory
// build it (create_moe), give it weights, run a forward, and check one token against the
// layer's definition written out by hand:
//   out = sum over the top-k experts e of  w_e * W2_e (silu(W1_e x) * (W3_e x))
//
//   build/examples/01_cpu_layer
#include <cmath>
#include <cstdio>
#include <vector>

#include "example_util.h"
#include "moe/moe.h"

int main() try {
  // 1. The layer. A real model's comes from moe::preset("qwen3-30b-a3b") or from its
  //    config.json (moe::config_from_hf_json_file); this one is small so that it runs at once.
  moe::MoeConfig config;
  config.name = "tiny";
  config.num_experts = 16;
  config.top_k = 2;
  config.hidden_size = 256;
  config.intermediate_size = 128;
  config.routing.method = moe::RoutingMethod::kSoftmaxTopK;  // softmax -> top-2 -> renormalize
  config.quant = moe::QuantMode::kBF16;                      // bf16 weights
  config.act_dtype = moe::DType::kBF16;                      // bf16 x and out
  config.max_num_tokens = 64;                                // workspaces are sized for this

  // 2. The factory builds the layer. "reference" is the CPU backend (the library's oracle);
  //    "auto" would take the fastest backend this machine can run. The report says why.
  moe::MoeOptions options;
  options.backend = "reference";
  auto [layer, report] = moe::create_moe(config, moe::Mapping{}, options);
  std::printf("%s", report.str().c_str());

  // 3. Weights come from a WeightSource: a checkpoint (example 03), your own tensors, or, as
  //    here, deterministic random ones.
  auto weights = moe::make_random_weights(config, /*seed=*/1);
  layer->load_weights(*weights);

  // 4. The forward. Tensors are non-owning views over your memory: x, out bf16 [T, H]. An empty
  //    router_logits view makes the layer compute x W_gate^T with its router weight.
  const int64_t t = 8, h = config.hidden_size, k = config.top_k, inter = config.intermediate_size;
  std::vector<uint16_t> x = example::random_bf16(t * h, /*seed=*/2);
  std::vector<uint16_t> out(t * h);
  const moe::TensorView x_view(x.data(), moe::DType::kBF16, {t, h});      // [T, H]
  const moe::TensorView out_view(out.data(), moe::DType::kBF16, {t, h});  // [T, H]
  layer->forward(x_view, moe::TensorView(), out_view);

  // 5. The same token by hand. route() gives the experts and weights the forward used.
  std::vector<int32_t> ids(t * k);
  std::vector<float> wts(t * k);
  layer->route(x_view, moe::TensorView(), moe::TensorView(ids.data(), moe::DType::kI32, {t, k}),
               moe::TensorView(wts.data(), moe::DType::kF32, {t, k}));
  const int64_t token = 0;
  auto matrix = [&](int expert, moe::Proj proj) {  // bf16 [out, in] -> float
    const moe::TensorView w = weights->expert_tensor(expert, proj, moe::Part::kWeight);
    std::vector<float> m(w.numel());
    for (int64_t i = 0; i < w.numel(); ++i) m[i] = example::from_bf16(w.data_as<uint16_t>()[i]);
    return m;
  };
  std::vector<double> expect(h, 0.0);
  for (int64_t j = 0; j < k; ++j) {
    const int e = ids[token * k + j];
    const auto w1 = matrix(e, moe::Proj::kGate), w3 = matrix(e, moe::Proj::kUp);
    const auto w2 = matrix(e, moe::Proj::kDown);
    std::vector<double> act(inter);  // silu(gate) * up, [I]
    for (int64_t i = 0; i < inter; ++i) {
      double g = 0, u = 0;
      for (int64_t c = 0; c < h; ++c) {
        const double xc = example::from_bf16(x[token * h + c]);
        g += w1[i * h + c] * xc;
        u += w3[i * h + c] * xc;
      }
      act[i] = g / (1 + std::exp(-g)) * u;
    }
    for (int64_t r = 0; r < h; ++r) {
      double y = 0;
      for (int64_t i = 0; i < inter; ++i) y += w2[r * inter + i] * act[i];
      expect[r] += wts[token * k + j] * y;
    }
  }
  double num = 0, den = 0;
  for (int64_t r = 0; r < h; ++r) {
    const double d = example::from_bf16(out[token * h + r]) - expect[r];
    num += d * d;
    den += expect[r] * expect[r];
  }
  const double err = std::sqrt(num / den);
  std::printf(
      "token 0: experts %d, %d (weights %.3f, %.3f); relative L2 to the hand-written "
      "layer %.2e\n",
      ids[0], ids[1], wts[0], wts[1], err);
  return err < 1e-2 ? 0 : 1;  // bf16 rounding of the intermediate and of the output
} catch (const moe::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
