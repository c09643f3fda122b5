// Deterministic random weights in checkpoint format (make_random_weights, include/moe/weights.h).
//
// Every tensor is a pure function of (seed, expert, projection, part), drawn with the
// counter-based generator of core/random.h, so the order of requests never matters:
//   master W [out, in] ~ N(0, 1/in)  (element i of stream (seed, expert, proj, kMaster))
//   then quantized with src/quant/quantizers.h into config.quant's checkpoint format:
//     bf16 / fp16      round to nearest even
//     fp8_per_tensor   e4m3 with one f32 scale per (expert, proj); input_scale f32 [1]:
//                      6/448 for gate/up, 12/448 for down (NOTE: chosen for N(0, 1) inputs:
//                      |x| stays well under 6 and the SwiGLU output well under 12)
//     fp8_block        e4m3 + f32 128x128 block scales
//     nvfp4            e2m1 + e4m3 scale per 16 + weight_scale_2 = 1/G; G is shared by the
//                      gate and up projections of an expert (computed from both, as NVFP4
//                      checkpoints do), so a fused gate_up GEMM has one global scale
//     mxfp4, w4a8      e2m1 + ue8m0 scale per 32 (MxScaleRule::kRceil)
//   biases (config.has_expert_biases, routed experts only) f32 [out] ~ N(0, 0.1^2).
// The shared MLP (expert kSharedExpert, num_shared_experts > 0) has
// shared_intermediate_size and no biases. Proj::kGateUp is the concatenation along dim 0 of
// the gate and up tensors of every part (weight [2I, H], row-block scales, per-tensor f32
// values -> [2], bias [2I]); for fp8_block that needs I % 128 == 0.
// Router weight f32 [E, H] ~ N(0, 1/H); router bias and correction bias f32 [E] ~ N(0, 0.1^2)
// when the config has them.
//
// NOTE: a view stays valid until the next request of another (expert, projection); the
// source caches the tensors of the last one it built (and the router tensors for its life).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/thread_pool.h"
#include "moe/errors.h"
#include "moe/weights.h"
#include "quant/formats.h"
#include "quant/quantizers.h"

namespace moe {
namespace {

// Stream kinds: one stream per (seed, expert, projection, kind).
enum class Stream : uint64_t {
  kMaster = 1,
  kBias = 2,
  kRouterWeight = 3,
  kRouterBias = 4,
  kCorrectionBias = 5,
};

constexpr float kGateUpInputScale = 6.0f / 448.0f;
constexpr float kDownInputScale = 12.0f / 448.0f;
constexpr float kBiasStddev = 0.1f;
constexpr int64_t kFp8Block = 128;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

uint64_t stream_of(uint64_t seed, int expert, Proj proj, Stream kind) {
  // expert + 1 so that kSharedExpert (-1) maps to 0.
  return stream_id(seed, static_cast<uint64_t>(expert + 1), static_cast<uint64_t>(proj),
                   static_cast<uint64_t>(kind));
}

/// Calls fn(row_begin, row_end) on blocks of `block` rows covering [0, rows), in parallel.
template <class Fn>
void for_row_blocks(int64_t rows, int64_t block, const Fn& fn) {
  const int64_t num_blocks = ceil_div(rows, block);
  parallel_for(num_blocks, 1,
               [&](int64_t begin, int64_t end) { fn(begin * block, std::min(rows, end * block)); });
}

/// Rows of one block a quantizer treats independently: everything else can be split.
int64_t rows_per_block(int64_t cols) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1));
}

Tensor make_f32(std::initializer_list<float> values) {
  Tensor t = Tensor::empty({static_cast<int64_t>(values.size())}, DType::kF32);
  std::copy(values.begin(), values.end(), t.data_as<float>());
  return t;
}

Tensor normal_f32(int64_t n, uint64_t stream, float stddev) {
  Tensor t = Tensor::empty({n}, DType::kF32);
  fill_normal(t, stream, stddev);
  return t;
}

/// The parts of one projection, indexed by Part.
using Parts = std::array<Tensor, 5>;

Tensor& at(Parts& parts, Part part) { return parts[static_cast<size_t>(part)]; }

/// Concatenates two tensors of equal trailing dimensions along dim 0.
Tensor concat_dim0(const Tensor& a, const Tensor& b) {
  std::vector<int64_t> shape(a.shape().begin(), a.shape().end());
  shape[0] += b.size(0);
  Tensor t = Tensor::empty(shape, a.dtype());
  std::memcpy(t.data(), a.data(), a.nbytes());
  std::memcpy(static_cast<char*>(t.data()) + a.nbytes(), b.data(), b.nbytes());
  return t;
}

class RandomWeightSource final : public WeightSource {
 public:
  RandomWeightSource(const MoeConfig& config, uint64_t seed) : config_(config), seed_(seed) {
    config.validate();
  }

  TensorView expert_tensor(int expert, Proj proj, Part part) override {
    MOE_CHECK(expert == kSharedExpert || (expert >= 0 && expert < config_.num_experts), describe(),
              ": expert ", expert, " out of range [0, ", config_.num_experts,
              ") (or kSharedExpert)");
    if (expert == kSharedExpert && config_.num_shared_experts == 0) return {};
    if (!(cached_ && cached_expert_ == expert && cached_proj_ == proj)) {
      cached_ = false;
      cached_parts_ = {};  // free the previous tensors before building the next ones
      cached_parts_ = proj == Proj::kGateUp ? fused_gate_up(expert) : build(expert, proj);
      cached_ = true;
      cached_expert_ = expert;
      cached_proj_ = proj;
    }
    return at(cached_parts_, part).view();
  }

  TensorView router_weight() override {
    if (!router_weight_.defined()) {
      router_weight_ = Tensor::empty({config_.num_experts, config_.hidden_size}, DType::kF32);
      fill_normal(router_weight_, stream_id(seed_, static_cast<uint64_t>(Stream::kRouterWeight)),
                  1.0f / std::sqrt(static_cast<float>(config_.hidden_size)));
    }
    return router_weight_.view();
  }

  TensorView router_bias() override {
    if (!config_.has_router_bias) return {};
    if (!router_bias_.defined()) {
      router_bias_ =
          normal_f32(config_.num_experts,
                     stream_id(seed_, static_cast<uint64_t>(Stream::kRouterBias)), kBiasStddev);
    }
    return router_bias_.view();
  }

  TensorView correction_bias() override {
    if (!config_.routing.has_correction_bias) return {};
    if (!correction_bias_.defined()) {
      correction_bias_ =
          normal_f32(config_.num_experts,
                     stream_id(seed_, static_cast<uint64_t>(Stream::kCorrectionBias)), kBiasStddev);
    }
    return correction_bias_.view();
  }

  std::string describe() const override {
    return "random weights (seed " + std::to_string(seed_) + ", " +
           std::string(quant_mode_name(config_.quant)) + ")";
  }

 private:
  int64_t inter_of(int expert) const {
    return expert == kSharedExpert ? config_.shared_intermediate_size : config_.intermediate_size;
  }

  /// Master weight W [rows, cols] ~ N(0, 1/cols) of (expert, proj).
  std::vector<float> master(int expert, Proj proj, int64_t rows, int64_t cols) const {
    std::vector<float> w(rows * cols);
    const uint64_t stream = stream_of(seed_, expert, proj, Stream::kMaster);
    const float stddev = 1.0f / std::sqrt(static_cast<float>(cols));
    for_row_blocks(rows, rows_per_block(cols), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin * cols; i < end * cols; ++i) w[i] = stddev * normal_at(stream, i);
    });
    return w;
  }

  /// NVFP4 encode scale G shared by an expert's gate and up projections.
  float fc1_global_scale(int expert, int64_t inter) {
    if (auto it = fc1_global_.find(expert); it != fc1_global_.end()) return it->second;
    const int64_t n = inter * config_.hidden_size;
    const std::vector<float> gate = master(expert, Proj::kGate, inter, config_.hidden_size);
    const std::vector<float> up = master(expert, Proj::kUp, inter, config_.hidden_size);
    // G = 448 * 6 / amax, so the G of the union is the smaller one.
    const float g = std::min(quant::nvfp4_global_scale(gate.data(), n),
                             quant::nvfp4_global_scale(up.data(), n));
    fc1_global_[expert] = g;
    return g;
  }

  Parts build(int expert, Proj proj) {
    const int64_t inter = inter_of(expert);
    const int64_t hidden = config_.hidden_size;
    const int64_t rows = proj == Proj::kDown ? hidden : inter;
    const int64_t cols = proj == Proj::kDown ? inter : hidden;
    const int64_t n = rows * cols;
    const std::vector<float> w = master(expert, proj, rows, cols);
    Parts parts;
    Tensor& weight = at(parts, Part::kWeight);
    const int64_t block = rows_per_block(cols);
    switch (config_.quant) {
      case QuantMode::kBF16:
      case QuantMode::kFP16: {
        const bool bf16 = config_.quant == QuantMode::kBF16;
        weight = Tensor::empty({rows, cols}, bf16 ? DType::kBF16 : DType::kF16);
        uint16_t* q = weight.data_as<uint16_t>();
        for_row_blocks(rows, block, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin * cols; i < end * cols; ++i) {
            q[i] = bf16 ? fmt::float_to_bf16(w[i]) : fmt::float_to_f16(w[i]);
          }
        });
        break;
      }
      case QuantMode::kFP8PerTensor: {
        const float scale = quant::fp8_per_tensor_scale(w.data(), n);
        weight = Tensor::empty({rows, cols}, DType::kE4M3);
        for_row_blocks(rows, block, [&](int64_t begin, int64_t end) {
          quant::quantize_fp8_per_tensor(w.data() + begin * cols, (end - begin) * cols, scale,
                                         weight.data_as<uint8_t>() + begin * cols);
        });
        at(parts, Part::kScale) = make_f32({scale});
        at(parts, Part::kInputScale) =
            make_f32({proj == Proj::kDown ? kDownInputScale : kGateUpInputScale});
        break;
      }
      case QuantMode::kFP8Block: {
        weight = Tensor::empty({rows, cols}, DType::kE4M3);
        const int64_t col_blocks = ceil_div(cols, kFp8Block);
        Tensor& scale = at(parts, Part::kScale);
        scale = Tensor::empty({ceil_div(rows, kFp8Block), col_blocks}, DType::kF32);
        for_row_blocks(rows, kFp8Block, [&](int64_t begin, int64_t end) {
          quant::quantize_fp8_block_weight(
              w.data() + begin * cols, end - begin, cols, weight.data_as<uint8_t>() + begin * cols,
              scale.data_as<float>() + (begin / kFp8Block) * col_blocks);
        });
        break;
      }
      case QuantMode::kNVFP4: {
        const float g = proj == Proj::kDown ? quant::nvfp4_global_scale(w.data(), n)
                                            : fc1_global_scale(expert, inter);
        weight = Tensor::empty({rows, cols}, DType::kE2M1);
        Tensor& sf = at(parts, Part::kScale);
        sf = Tensor::empty({rows, cols / 16}, DType::kE4M3Scale);
        for_row_blocks(rows, block, [&](int64_t begin, int64_t end) {
          quant::quantize_nvfp4(w.data() + begin * cols, end - begin, cols, g,
                                weight.data_as<uint8_t>() + begin * cols / 2,
                                sf.data_as<uint8_t>() + begin * (cols / 16));
        });
        at(parts, Part::kGlobalScale) = make_f32({1.0f / g});
        break;
      }
      case QuantMode::kMXFP4:
      case QuantMode::kW4A8MXFP4MXFP8: {
        weight = Tensor::empty({rows, cols}, DType::kE2M1);
        Tensor& sf = at(parts, Part::kScale);
        sf = Tensor::empty({rows, cols / 32}, DType::kUE8M0);
        for_row_blocks(rows, block, [&](int64_t begin, int64_t end) {
          quant::quantize_mx(quant::MxElem::kE2M1, quant::MxScaleRule::kRceil,
                             w.data() + begin * cols, end - begin, cols,
                             weight.data_as<uint8_t>() + begin * cols / 2,
                             sf.data_as<uint8_t>() + begin * (cols / 32));
        });
        break;
      }
    }
    if (config_.has_expert_biases && expert != kSharedExpert) {
      at(parts, Part::kBias) =
          normal_f32(rows, stream_of(seed_, expert, proj, Stream::kBias), kBiasStddev);
    }
    return parts;
  }

  Parts fused_gate_up(int expert) {
    const int64_t inter = inter_of(expert);
    MOE_CHECK(config_.quant != QuantMode::kFP8Block || inter % kFp8Block == 0, describe(), ": ",
              expert_tensor_name(expert, Proj::kGateUp, Part::kScale),
              ": fp8_block scales cover 128 rows, so a fused gate_up_proj needs an intermediate "
              "size that is a multiple of 128, got ",
              inter);
    Parts gate = build(expert, Proj::kGate);
    Parts up = build(expert, Proj::kUp);
    Parts fused;
    for (size_t p = 0; p < fused.size(); ++p) {
      if (gate[p].defined()) fused[p] = concat_dim0(gate[p], up[p]);
    }
    return fused;
  }

  MoeConfig config_;
  uint64_t seed_;
  bool cached_ = false;
  int cached_expert_ = 0;
  Proj cached_proj_ = Proj::kGate;
  Parts cached_parts_;
  std::map<int, float> fc1_global_;  // NVFP4 encode scale G of each expert's gate/up
  Tensor router_weight_;
  Tensor router_bias_;
  Tensor correction_bias_;
};

}  // namespace

std::unique_ptr<WeightSource> make_random_weights(const MoeConfig& config, uint64_t seed) {
  return std::make_unique<RandomWeightSource>(config, seed);
}

}  // namespace moe
