// A program outside the source tree that includes the installed headers and links the installed
// library: builds a small layer on the reference backend, runs it, and prints one line that the
// package test checks.
#include <moe/checkpoint.h>
#include <moe/moe.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  try {
    moe::MoeConfig config = moe::preset("qwen3-30b-a3b");
    config.num_experts = 8;
    config.top_k = 2;
    config.hidden_size = 128;
    config.intermediate_size = 64;
    config.max_num_tokens = 4;
    moe::MoeOptions options;
    options.backend = "reference";
    auto [layer, report] = moe::create_moe(config, {}, options);
    layer->load_weights(*moe::make_random_weights(config, 1));
    std::vector<uint16_t> x(4 * 128, 0x3F80), out(4 * 128, 0xFFFF);  // bf16 1.0; NaN poison
    layer->forward(moe::TensorView(x.data(), moe::DType::kBF16, {4, 128}), moe::TensorView(),
                   moe::TensorView(out.data(), moe::DType::kBF16, {4, 128}));
    int finite = 0;
    for (uint16_t v : out) finite += (v & 0x7F80) != 0x7F80;  // exponent not all ones
    std::printf("package consumer: backend %s, %d of %zu outputs finite\n",
                std::string(layer->backend_name()).c_str(), finite, out.size());
    return finite == static_cast<int>(out.size()) ? 0 : 1;
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "package consumer: %s\n", e.what());
    return 1;
  }
}
