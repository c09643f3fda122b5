// Example 03: a layer from an FP8 checkpoint (DeepSeek-V3 style: e4m3 weights with 128x128
// block scales, `weight_scale_inv`).
//
//   build/examples/03_fp8_checkpoint [CHECKPOINT_DIR [LAYER]]
//
// Without a directory, it first writes a small DeepSeek-V3 shaped FP8 checkpoint (config.json +
// model.safetensors) to a temporary directory. The layer runs on the best backend of this
// machine (a GPU when there is one) and is checked against the CPU oracle (the reference
// backend) loaded from the same checkpoint.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "example_util.h"
#include "moe/checkpoint.h"
#include "moe/moe.h"

// Writes a small FP8 checkpoint with random weights; returns its MoE layer's index.
int write_small_checkpoint(const std::string& dir) {
  moe::MoeConfig c = moe::preset("deepseek-v3");  // sigmoid routing in groups, 1 shared expert
  c.num_experts = 16;                             // 4 groups of 4, top-2 groups, top-4 experts
  c.routing.num_groups = 4;
  c.routing.topk_groups = 2;
  c.top_k = 4;
  c.hidden_size = 512;
  c.intermediate_size = 256;
  c.shared_intermediate_size = 256;
  c.quant = moe::QuantMode::kFP8Block;
  const int layer = 3;
  moe::save_checkpoint_layer(dir, c, *moe::make_random_weights(c, /*seed=*/7), layer);
  std::printf("wrote an FP8 checkpoint to %s\n", dir.c_str());
  return layer;
}

int main(int argc, char** argv) try {
  std::string dir = argc > 1 ? argv[1] : "";
  int layer = argc > 2 ? std::atoi(argv[2]) : -1;
  const bool generated = dir.empty();
  if (generated) {
    dir = (std::filesystem::temp_directory_path() / ("moe_example_fp8_" + std::to_string(getpid())))
              .string();
    layer = write_small_checkpoint(dir);
  } else if (layer < 0) {
    layer = moe::checkpoint_moe_layers(dir).front();  // the first MoE layer
  }

  // 1. The checkpoint says what the layer is: config.json gives the shape and routing, the
  //    tensors' dtypes the quantization.
  moe::MoeConfig config = moe::checkpoint_layer_config(dir, layer);
  config.max_num_tokens = 64;
  std::printf("layer %d of %s:\n%s\n", layer, dir.c_str(), config.summary().c_str());

  // 2. The layer on the best backend here, and the CPU oracle. Each loads the checkpoint in
  //    the layout it stores (load_mode); tensors are read from the mapped file on demand.
  auto [layer_moe, report] = moe::create_moe(config);
  std::printf("%s", report.str().c_str());
  moe::MoeOptions oracle_options;
  oracle_options.backend = "reference";
  auto oracle = moe::create_moe(config, moe::Mapping{}, oracle_options).moe;
  for (moe::ConfigurableMoE* m : {layer_moe.get(), oracle.get()}) {
    moe::CheckpointLayer ckpt = moe::open_checkpoint_layer(dir, config, layer);
    m->load_weights(*ckpt.source, ckpt.load_mode);
  }

  // 3. The same tokens through both. Router logits are left empty: the layer applies the
  //    checkpoint's router weight (and DeepSeek's e_score_correction_bias) itself.
  const int64_t t = 32, h = config.hidden_size;
  const std::vector<uint16_t> x_host = example::random_bf16(t * h, /*seed=*/3);
  const moe::Device dev = layer_moe->device();
  const moe::Tensor x = example::to_device(x_host.data(), moe::DType::kBF16, {t, h}, dev);
  const moe::Tensor out = moe::Tensor::empty({t, h}, moe::DType::kBF16, dev);
  layer_moe->forward(x, moe::TensorView(), out);  // stream: the default one
  const moe::Tensor x_cpu =
      example::to_device(x_host.data(), moe::DType::kBF16, {t, h}, moe::Device::cpu());
  const moe::Tensor ref = moe::Tensor::empty({t, h}, moe::DType::kBF16);
  oracle->forward(x_cpu, moe::TensorView(), ref);

  // 4. FP8 activations are quantized per 128 values of a token on both sides; what remains
  //    is rounding (the library's table allows 3e-2 relative L2 for fp8).
  const double err = example::relative_l2(example::to_host_bf16(out), example::to_host_bf16(ref));
  std::printf("%s on %s vs the CPU oracle: relative L2 %.2e\n",
              std::string(layer_moe->backend_name()).c_str(), dev.str().c_str(), err);
  if (generated) std::filesystem::remove_all(dir);
  return err < 3e-2 ? 0 : 1;
} catch (const moe::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
