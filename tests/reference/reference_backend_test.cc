// The reference backend against a naive float64 layer written here: whole weight matrices
// dequantized up front, plain loops, the same activation-quantization emulation written
// independently. Both are float64 oracles of the same numerics, so they may differ only by
// summation order (relative L2 <= 1e-6). Also: expert parallelism, the accumulate and
// with_routed flags, zero tokens, lonely experts, loading errors, validation, reload,
// determinism and the speed of a Qwen3-30B-A3B-shaped layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "backends/reference/reference_backend.h"
#include "common/test_util.h"
#include "core/compare.h"
#include "core/random.h"
#include "core/thread_pool.h"
#include "moe/errors.h"
#include "quant/formats.h"
#include "quant/quantizers.h"

namespace moe {
namespace {

using moe::testing::clone;
using moe::testing::MapWeightSource;

constexpr double kOracleTolerance = 1e-6;

// ---- Configs and inputs --------------------------------------------------------------------

struct LayerCase {
  QuantMode quant;
  Activation activation;
  bool biases;
  bool shared;
  int hidden;
  int inter;
};

void PrintTo(const LayerCase& c, std::ostream* os) {
  *os << quant_mode_name(c.quant) << ", " << activation_name(c.activation)
      << (c.biases ? ", biases" : "") << (c.shared ? ", shared MLP" : "") << ", H " << c.hidden
      << ", I " << c.inter;
}

MoeConfig layer_config(const LayerCase& c) {
  MoeConfig config = moe::testing::small_config(8, 2, c.hidden, c.inter);
  config.quant = c.quant;
  config.act_dtype = c.quant == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
  config.activation = c.activation;
  // A small limit so that the SwiGLU-OAI clamps are exercised with unit-scale activations.
  config.swiglu_oai.limit = 1.5f;
  config.has_expert_biases = c.biases;
  if (c.shared) {
    config.num_shared_experts = 1;
    config.shared_intermediate_size = c.inter / 2 + (c.inter % 128 == 0 ? 0 : 4);
  }
  return config;
}

Tensor random_x(int64_t tokens, const MoeConfig& config, uint64_t seed) {
  Tensor x = Tensor::empty({tokens, config.hidden_size}, config.act_dtype);
  fill_normal(x, stream_id(seed, 101));
  return x;
}

struct Routing {
  Tensor ids;      // i32 [T, k]
  Tensor weights;  // f32 [T, k]
};

/// Distinct random experts per token, random positive weights.
Routing random_routing(int64_t tokens, int experts, int top_k, uint64_t seed) {
  Routing r{Tensor::empty({tokens, top_k}, DType::kI32),
            Tensor::empty({tokens, top_k}, DType::kF32)};
  const uint64_t stream = stream_id(seed, 202);
  uint64_t draw = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int> pool(experts);
    std::iota(pool.begin(), pool.end(), 0);
    for (int k = 0; k < top_k; ++k) {
      const int j = k + static_cast<int>(uniform_at(stream, draw++) * (experts - k));
      std::swap(pool[k], pool[j]);
      r.ids.data_as<int32_t>()[t * top_k + k] = pool[k];
      r.weights.data_as<float>()[t * top_k + k] = 0.1f + uniform_at(stream, draw++);
    }
  }
  return r;
}

// ---- The naive float64 layer ---------------------------------------------------------------

float act_to_float(uint16_t bits, DType dtype) {
  return dtype == DType::kBF16 ? fmt::bf16_to_float(bits) : fmt::f16_to_float(bits);
}

uint16_t float_to_act(float x, DType dtype) {
  return dtype == DType::kBF16 ? fmt::float_to_bf16(x) : fmt::float_to_f16(x);
}

std::vector<uint8_t> bytes_of(const TensorView& t) {
  if (t.empty()) return {};
  const auto* p = static_cast<const uint8_t*>(t.data());
  return std::vector<uint8_t>(p, p + t.nbytes());
}

float scalar_of(const TensorView& t) { return t.data_as<float>()[0]; }

/// One projection dequantized whole: w [rows, cols] in double.
struct NaiveMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<double> w;
  std::vector<double> bias;  // empty when none
  float input_scale = 0;     // fp8_per_tensor
};

struct NaiveExpert {
  NaiveMatrix gate, up, down;
};

NaiveMatrix naive_matrix(WeightSource& src, const MoeConfig& config, int expert, Proj proj,
                         int64_t rows, int64_t cols) {
  NaiveMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.w.resize(rows * cols);
  // Copy each part before the next request (a view lives until the next call).
  const std::vector<uint8_t> q = bytes_of(src.expert_tensor(expert, proj, Part::kWeight));
  switch (config.quant) {
    case QuantMode::kBF16:
    case QuantMode::kFP16: {
      const DType dt = config.quant == QuantMode::kBF16 ? DType::kBF16 : DType::kF16;
      for (int64_t i = 0; i < rows * cols; ++i) {
        uint16_t bits;
        std::memcpy(&bits, q.data() + 2 * i, 2);
        m.w[i] = act_to_float(bits, dt);
      }
      break;
    }
    case QuantMode::kFP8PerTensor: {
      const double s = scalar_of(src.expert_tensor(expert, proj, Part::kScale));
      m.input_scale = scalar_of(src.expert_tensor(expert, proj, Part::kInputScale));
      for (int64_t i = 0; i < rows * cols; ++i) m.w[i] = fmt::e4m3_to_float(q[i]) * s;
      break;
    }
    case QuantMode::kFP8Block: {
      const TensorView sv = src.expert_tensor(expert, proj, Part::kScale);
      const std::vector<float> s(sv.data_as<float>(), sv.data_as<float>() + sv.numel());
      const int64_t kb = (cols + 127) / 128;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          m.w[r * cols + c] = fmt::e4m3_to_float(q[r * cols + c]) *
                              static_cast<double>(s[(r / 128) * kb + c / 128]);
        }
      }
      break;
    }
    case QuantMode::kNVFP4: {
      const std::vector<uint8_t> sf = bytes_of(src.expert_tensor(expert, proj, Part::kScale));
      const double global = scalar_of(src.expert_tensor(expert, proj, Part::kGlobalScale));
      // q * sf is exact in float with an encode scale of 1; the global factor in double.
      std::vector<float> w(rows * cols);
      quant::dequantize_nvfp4(q.data(), sf.data(), rows, cols, 1.0f, w.data());
      for (int64_t i = 0; i < rows * cols; ++i) m.w[i] = w[i] * global;
      break;
    }
    case QuantMode::kMXFP4:
    case QuantMode::kW4A8MXFP4MXFP8: {
      const std::vector<uint8_t> sf = bytes_of(src.expert_tensor(expert, proj, Part::kScale));
      std::vector<float> w(rows * cols);  // e2m1 * 2^k: exact in float
      quant::dequantize_mx(quant::MxElem::kE2M1, q.data(), sf.data(), rows, cols, w.data());
      for (int64_t i = 0; i < rows * cols; ++i) m.w[i] = w[i];
      break;
    }
  }
  if (config.has_expert_biases && expert != kSharedExpert) {
    const TensorView b = src.expert_tensor(expert, proj, Part::kBias);
    m.bias.assign(b.data_as<float>(), b.data_as<float>() + rows);
  }
  return m;
}

NaiveExpert naive_expert(WeightSource& src, const MoeConfig& config, int expert) {
  const int64_t h = config.hidden_size;
  const int64_t i =
      expert == kSharedExpert ? config.shared_intermediate_size : config.intermediate_size;
  return {naive_matrix(src, config, expert, Proj::kGate, i, h),
          naive_matrix(src, config, expert, Proj::kUp, i, h),
          naive_matrix(src, config, expert, Proj::kDown, h, i)};
}

/// What a GPU kernel of the mode does to an activation vector held as floats.
std::vector<double> naive_quantize_act(const MoeConfig& config, const std::vector<float>& v,
                                       float static_scale) {
  const int64_t n = static_cast<int64_t>(v.size());
  std::vector<double> out(n);
  std::vector<uint8_t> q(n);
  switch (config.quant) {
    case QuantMode::kFP8PerTensor:
      quant::quantize_fp8_per_tensor(v.data(), n, static_scale, q.data());
      for (int64_t i = 0; i < n; ++i) out[i] = fmt::e4m3_to_float(q[i]) * double{static_scale};
      break;
    case QuantMode::kFP8Block: {
      std::vector<float> s((n + 127) / 128);
      quant::quantize_fp8_act_1x128(v.data(), 1, n, false, q.data(), s.data());
      for (int64_t i = 0; i < n; ++i) out[i] = fmt::e4m3_to_float(q[i]) * double{s[i / 128]};
      break;
    }
    case QuantMode::kW4A8MXFP4MXFP8: {
      std::vector<uint8_t> s(n / 32);
      std::vector<float> back(n);  // e4m3 * 2^k: exact in float
      quant::quantize_mx(quant::MxElem::kE4M3, quant::MxScaleRule::kRceil, v.data(), 1, n, q.data(),
                         s.data());
      quant::dequantize_mx(quant::MxElem::kE4M3, q.data(), s.data(), 1, n, back.data());
      for (int64_t i = 0; i < n; ++i) out[i] = back[i];
      break;
    }
    default:  // 16-bit activations
      for (int64_t i = 0; i < n; ++i) {
        out[i] = act_to_float(float_to_act(v[i], config.act_dtype), config.act_dtype);
      }
  }
  return out;
}

/// The whole layer: experts in global order (all E), the shared MLP when the config has it.
struct NaiveLayer {
  MoeConfig config;
  std::vector<NaiveExpert> experts;
  NaiveExpert shared;

  NaiveLayer(WeightSource& src, const MoeConfig& c) : config(c) {
    for (int e = 0; e < c.num_experts; ++e) experts.push_back(naive_expert(src, c, e));
    if (c.num_shared_experts > 0) shared = naive_expert(src, c, kSharedExpert);
  }

  std::vector<double> expert_output(const NaiveExpert& e, const std::vector<double>& x,
                                    float mid_scale) const {
    const int64_t inter = e.gate.rows;
    const int64_t hidden = config.hidden_size;
    std::vector<float> h(inter);
    for (int64_t i = 0; i < inter; ++i) {
      double g = 0, u = 0;
      for (int64_t c = 0; c < hidden; ++c) {
        g += e.gate.w[i * hidden + c] * x[c];
        u += e.up.w[i * hidden + c] * x[c];
      }
      if (!e.gate.bias.empty()) g += e.gate.bias[i];
      if (!e.up.bias.empty()) u += e.up.bias[i];
      double v;
      if (config.activation == Activation::kSwiGLU) {
        v = g * (1.0 / (1.0 + std::exp(-g))) * u;
      } else {
        const double limit = config.swiglu_oai.limit;
        const double alpha = config.swiglu_oai.alpha;
        g = std::min(g, limit);
        u = std::max(-limit, std::min(u, limit));
        v = (u + 1.0) * g * (1.0 / (1.0 + std::exp(-alpha * g)));
      }
      h[i] = static_cast<float>(v);
    }
    const std::vector<double> hq = naive_quantize_act(config, h, mid_scale);
    std::vector<double> y(hidden);
    for (int64_t r = 0; r < hidden; ++r) {
      double acc = 0;
      for (int64_t i = 0; i < inter; ++i) acc += e.down.w[r * inter + i] * hq[i];
      y[r] = acc + (e.down.bias.empty() ? 0.0 : e.down.bias[r]);
    }
    return y;
  }

  /// out [T, H] in act_dtype bits; experts outside [first, first + count) are skipped.
  std::vector<uint16_t> forward(const Tensor& x, const Routing& routing, bool with_routed,
                                bool with_shared, const std::vector<uint16_t>* accumulate_onto,
                                int first = 0, int count = -1) const {
    if (count < 0) count = config.num_experts;
    const int64_t tokens = x.size(0);
    const int64_t hidden = config.hidden_size;
    const int top_k = config.top_k;
    // Static fp8 scales: max over the experts this rank runs.
    float in_scale = 0, mid_scale = 0;
    std::vector<const NaiveExpert*> run;
    for (int e = first; e < first + count; ++e) run.push_back(&experts[e]);
    if (config.num_shared_experts > 0) run.push_back(&shared);
    for (const NaiveExpert* e : run) {
      in_scale = std::max({in_scale, e->gate.input_scale, e->up.input_scale});
      mid_scale = std::max(mid_scale, e->down.input_scale);
    }
    std::vector<uint16_t> out(tokens * hidden);
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<float> xf(hidden);
      for (int64_t c = 0; c < hidden; ++c) {
        xf[c] = act_to_float(x.data_as<uint16_t>()[t * hidden + c], config.act_dtype);
      }
      const std::vector<double> xq = naive_quantize_act(config, xf, in_scale);
      std::vector<double> acc(hidden, 0.0);
      for (int k = 0; k < top_k && with_routed; ++k) {
        const int e = routing.ids.data_as<int32_t>()[t * top_k + k];
        if (e < first || e >= first + count) continue;
        const double w = routing.weights.data_as<float>()[t * top_k + k];
        const std::vector<double> y = expert_output(experts[e], xq, mid_scale);
        for (int64_t c = 0; c < hidden; ++c) acc[c] += w * y[c];
      }
      if (with_shared) {
        const std::vector<double> y = expert_output(shared, xq, mid_scale);
        for (int64_t c = 0; c < hidden; ++c) acc[c] += y[c];
      }
      for (int64_t c = 0; c < hidden; ++c) {
        if (accumulate_onto)
          acc[c] += act_to_float((*accumulate_onto)[t * hidden + c], config.act_dtype);
        out[t * hidden + c] = float_to_act(static_cast<float>(acc[c]), config.act_dtype);
      }
    }
    return out;
  }
};

// ---- Running the backend --------------------------------------------------------------------

std::unique_ptr<MoEBackend> make_backend(const MoeConfig& config, const Mapping& mapping = {}) {
  return reference_backend_entry().create(config, mapping, DeviceInfo::cpu_only());
}

std::unique_ptr<MoEBackend> loaded_backend(const MoeConfig& config, WeightSource& source,
                                           const Mapping& mapping = {},
                                           LoadMode mode = LoadMode::kVanilla) {
  std::unique_ptr<MoEBackend> b = make_backend(config, mapping);
  b->create_weights();
  b->load_weights(source, mode);
  b->post_load_weights();
  return b;
}

struct RunFlags {
  bool with_routed = true;
  bool with_shared = false;
  const std::vector<uint16_t>* accumulate_onto = nullptr;
};

/// Runs the backend on poisoned output (or on a copy of accumulate_onto).
std::vector<uint16_t> run_backend(MoEBackend& b, const MoeConfig& config, const Tensor& x,
                                  const Routing& routing, const RunFlags& flags = {}) {
  const int64_t tokens = x.size(0);
  Tensor out = Tensor::empty({tokens, config.hidden_size}, config.act_dtype);
  if (flags.accumulate_onto) {
    std::memcpy(out.data(), flags.accumulate_onto->data(), out.nbytes());
  } else {
    fill_poison(out);
  }
  RunMoeArgs args;
  args.x = b.quantize_input(x, nullptr);
  args.topk_ids = routing.ids;
  args.topk_weights = routing.weights;
  args.out = out;
  args.with_routed = flags.with_routed;
  args.with_shared = flags.with_shared;
  args.accumulate = flags.accumulate_onto != nullptr;
  b.run_moe(args, nullptr);
  const auto* p = out.data_as<uint16_t>();
  return std::vector<uint16_t>(p, p + out.numel());
}

std::vector<double> as_doubles(const std::vector<uint16_t>& bits, DType dtype) {
  std::vector<double> v(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) v[i] = act_to_float(bits[i], dtype);
  return v;
}

/// Relative L2 of `got` against `want`, after checking that every element was written.
double compare(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want, DType dtype) {
  const std::vector<double> g = as_doubles(got, dtype);
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(g[i])) {
      ADD_FAILURE() << "output element " << i << " not written (or not finite): " << g[i];
      return INFINITY;
    }
  }
  return relative_l2(g, as_doubles(want, dtype));
}

// ---- The matrix: every quant mode x activation x biases x shared MLP ----------------------------

class ReferenceMatchesNaive : public ::testing::TestWithParam<LayerCase> {};

TEST_P(ReferenceMatchesNaive, EveryOutputWithinOracleTolerance) {
  const LayerCase c = GetParam();
  const MoeConfig config = layer_config(c);
  auto source = make_random_weights(config, 7);
  auto backend = loaded_backend(config, *source);
  auto naive_source = make_random_weights(config, 7);
  const NaiveLayer naive(*naive_source, config);

  const int64_t tokens = 19;
  const Tensor x = random_x(tokens, config, 11);
  const Routing routing = random_routing(tokens, config.num_experts, config.top_k, 13);
  const RunFlags flags{true, c.shared, nullptr};
  const std::vector<uint16_t> got = run_backend(*backend, config, x, routing, flags);
  const std::vector<uint16_t> want = naive.forward(x, routing, true, c.shared, nullptr);
  const double err = compare(got, want, config.act_dtype);
  EXPECT_LE(err, kOracleTolerance) << config.summary();
  // A meaningful output: not all zero.
  EXPECT_GT(std::count_if(want.begin(), want.end(), [](uint16_t b) { return (b & 0x7FFF) != 0; }),
            static_cast<long>(want.size() / 2));
}

std::vector<LayerCase> all_cases() {
  std::vector<LayerCase> cases;
  for (QuantMode q : all_quant_modes()) {
    for (Activation a : {Activation::kSwiGLU, Activation::kSwiGLUOAI}) {
      for (bool biases : {false, true}) {
        for (bool shared : {false, true}) {
          cases.push_back({q, a, biases, shared, 256, 128});
          // Partial 128-blocks along both H and I.
          if (q == QuantMode::kFP8Block) cases.push_back({q, a, biases, shared, 200, 72});
        }
      }
    }
  }
  return cases;
}

std::string case_name(const ::testing::TestParamInfo<LayerCase>& info) {
  const LayerCase& c = info.param;
  return std::string(quant_mode_name(c.quant)) + "_" + std::string(activation_name(c.activation)) +
         (c.biases ? "_bias" : "") + (c.shared ? "_shared" : "") + "_H" + std::to_string(c.hidden) +
         "_I" + std::to_string(c.inter);
}

INSTANTIATE_TEST_SUITE_P(AllModes, ReferenceMatchesNaive, ::testing::ValuesIn(all_cases()),
                         case_name);

// ---- Loading: fused gate_up equals separate gate and up -----------------------------------------

class ReferenceFusedLoad : public ::testing::TestWithParam<QuantMode> {};

TEST_P(ReferenceFusedLoad, FusedGateUpGivesTheSameBits) {
  MoeConfig config = layer_config({GetParam(), Activation::kSwiGLU, true, true, 256, 128});
  config.shared_intermediate_size = 128;  // fp8_block splits fused scales by 128-row blocks
  auto source = make_random_weights(config, 3);
  auto vanilla = loaded_backend(config, *source);
  auto fused = loaded_backend(config, *source, {}, LoadMode::kFusedGateUpProj);
  const Tensor x = random_x(9, config, 4);
  const Routing routing = random_routing(9, config.num_experts, config.top_k, 5);
  const RunFlags flags{true, true, nullptr};
  EXPECT_EQ(run_backend(*vanilla, config, x, routing, flags),
            run_backend(*fused, config, x, routing, flags));
}

INSTANTIATE_TEST_SUITE_P(AllModes, ReferenceFusedLoad, ::testing::ValuesIn(all_quant_modes()),
                         [](const auto& info) { return std::string(quant_mode_name(info.param)); });

TEST(ReferenceBackend, FusedFp8BlockWithPartialBlocksIsRejected) {
  const MoeConfig config =
      layer_config({QuantMode::kFP8Block, Activation::kSwiGLU, false, false, 200, 72});
  // A checkpoint with a fused gate_up_proj whose 128-row scale blocks straddle gate and up.
  MapWeightSource src;
  src.set(0, Proj::kGateUp, Part::kWeight, Tensor::empty({144, 200}, DType::kE4M3));
  src.set(0, Proj::kGateUp, Part::kScale, Tensor::empty({2, 2}, DType::kF32));
  auto b = make_backend(config);
  b->create_weights();
  try {
    b->load_weights(src, LoadMode::kFusedGateUpProj);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("experts.0.gate_up_proj.weight_scale"), std::string::npos)
        << e.message();
    EXPECT_NE(e.message().find("multiple of 128"), std::string::npos) << e.message();
  }
  // The random source refuses to build such a tensor too.
  auto random = make_random_weights(config, 3);
  EXPECT_THROW(b->load_weights(*random, LoadMode::kFusedGateUpProj), Error);
}

// ---- Capability ---------------------------------------------------------------------------------

TEST(ReferenceBackend, CanImplementEveryModeAndSaysWhyNot) {
  for (QuantMode q : all_quant_modes()) {
    for (Activation a : {Activation::kSwiGLU, Activation::kSwiGLUOAI}) {
      const MoeConfig config = layer_config({q, a, false, false, 256, 128});
      const Capability cap =
          reference_backend_entry().can_implement(config, {}, DeviceInfo::cpu_only());
      EXPECT_TRUE(cap.ok) << cap.reason;
      EXPECT_NE(cap.reason.find("CPU"), std::string::npos);
    }
  }
  MoeConfig config = layer_config({QuantMode::kBF16, Activation::kSwiGLU, false, false, 256, 128});
  const Capability ep3 =
      reference_backend_entry().can_implement(config, {3, 1}, DeviceInfo::cpu_only());
  EXPECT_FALSE(ep3.ok);
  EXPECT_NE(ep3.reason.find("ep_size 3"), std::string::npos) << ep3.reason;
  config.top_k = 0;
  const Capability bad =
      reference_backend_entry().can_implement(config, {}, DeviceInfo::cpu_only());
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.reason.find("top_k"), std::string::npos) << bad.reason;
  EXPECT_THROW(make_backend(config), Error);

  auto b =
      make_backend(layer_config({QuantMode::kBF16, Activation::kSwiGLU, false, false, 256, 128}));
  EXPECT_EQ(b->name(), "reference");
  EXPECT_EQ(b->scheduler_kind(), SchedulerKind::kExternalComm);
  EXPECT_TRUE(b->supports_load_balancer());  // static EPLB: it loads per slot
  EXPECT_TRUE(b->device().is_cpu());
  EXPECT_GT(b->workspace_bytes(64), 0u);
}

// ---- Expert parallelism and the run flags
// --------------------------------------------------------

TEST(ReferenceBackend, ExpertParallelRanksSumToTheSingleRankOutput) {
  const MoeConfig config =
      layer_config({QuantMode::kFP8PerTensor, Activation::kSwiGLU, true, true, 256, 128});
  auto source = make_random_weights(config, 21);
  const NaiveLayer naive(*source, config);
  const Tensor x = random_x(17, config, 22);
  const Routing routing = random_routing(17, config.num_experts, config.top_k, 23);

  auto single = loaded_backend(config, *source);
  const std::vector<uint16_t> full =
      run_backend(*single, config, x, routing, {true, true, nullptr});
  std::vector<double> sum(full.size(), 0.0);
  for (int rank = 0; rank < 2; ++rank) {
    auto b = loaded_backend(config, *source, {2, rank});
    auto* ref = dynamic_cast<ReferenceBackend*>(b.get());
    ASSERT_NE(ref, nullptr);
    EXPECT_EQ(ref->first_local_expert(), rank * 4);
    EXPECT_EQ(ref->num_local_experts(), 4);
    // The shared MLP is added by rank 0 only.
    const bool shared = rank == 0;
    const std::vector<uint16_t> part = run_backend(*b, config, x, routing, {true, shared, nullptr});
    EXPECT_LE(compare(part, naive.forward(x, routing, true, shared, nullptr, rank * 4, 4),
                      config.act_dtype),
              kOracleTolerance);
    const std::vector<double> d = as_doubles(part, config.act_dtype);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += d[i];
  }
  // Each rank rounds its partial sum to bf16 once: a few bf16 ulps apart.
  EXPECT_LE(relative_l2(sum, as_doubles(full, config.act_dtype)), 5e-3);
}

TEST(ReferenceBackend, WideOutIsUnroundedAndSumsToTheSingleRankBits) {
  // Expert parallelism: each rank writes its partial sum into an f64 (host) out, unrounded;
  // the partials summed in rank order, plus the shared MLP accumulated into the same f64
  // buffer, rounded once, give the single-rank output (only the double additions' order
  // differs).
  const MoeConfig config =
      layer_config({QuantMode::kBF16, Activation::kSwiGLU, false, true, 256, 128});
  auto source = make_random_weights(config, 41);
  const int64_t tokens = 19, hidden = config.hidden_size;
  const Tensor x = random_x(tokens, config, 42);
  const Routing routing = random_routing(tokens, config.num_experts, config.top_k, 43);
  auto single = loaded_backend(config, *source);
  const std::vector<uint16_t> full =
      run_backend(*single, config, x, routing, {true, true, nullptr});

  // One rank, f64 and f32 out: the act_dtype output is their rounding.
  for (DType wide : {DType::kF64, DType::kF32}) {
    Tensor out = Tensor::empty({tokens, hidden}, wide);
    fill_poison(out);
    RunMoeArgs args;
    args.x = single->quantize_input(x, nullptr);
    args.topk_ids = routing.ids;
    args.topk_weights = routing.weights;
    args.out = out;
    args.with_shared = true;
    single->run_moe(args, nullptr);
    int64_t not_bf16 = 0;
    for (int64_t i = 0; i < tokens * hidden; ++i) {
      const double v = wide == DType::kF64 ? out.data_as<double>()[i] : out.data_as<float>()[i];
      ASSERT_EQ(fmt::float_to_bf16(static_cast<float>(v)), full[i]) << dtype_name(wide) << " " << i;
      not_bf16 += fmt::bf16_to_float(full[i]) != v;
    }
    EXPECT_GT(not_bf16, tokens * hidden / 2) << dtype_name(wide) << " out was rounded to bf16";
  }

  Tensor sum = Tensor::empty({tokens, hidden}, DType::kF64);  // [T, H]
  std::fill_n(sum.data_as<double>(), tokens * hidden, 0.0);
  for (int rank = 0; rank < 2; ++rank) {
    auto b = loaded_backend(config, *source, {2, rank});
    Tensor part = Tensor::empty({tokens, hidden}, DType::kF64);
    fill_poison(part);
    RunMoeArgs args;
    args.x = b->quantize_input(x, nullptr);
    args.topk_ids = routing.ids;
    args.topk_weights = routing.weights;
    args.out = part;
    b->run_moe(args, nullptr);
    for (int64_t i = 0; i < tokens * hidden; ++i) {
      sum.data_as<double>()[i] += part.data_as<double>()[i];
    }
    if (rank == 1) {  // the token's own rank adds the shared MLP into the wide sum
      RunMoeArgs s = args;
      s.out = sum;
      s.with_routed = false;
      s.with_shared = true;
      s.accumulate = true;
      b->run_moe(s, nullptr);
    }
  }
  std::vector<uint16_t> ep(full.size());
  for (size_t i = 0; i < ep.size(); ++i) {
    ep[i] = fmt::float_to_bf16(static_cast<float>(sum.data_as<double>()[i]));
  }
  EXPECT_LE(relative_l2(as_doubles(ep, config.act_dtype), as_doubles(full, config.act_dtype)),
            1e-6);
}

TEST(ReferenceBackend, AccumulateAndSharedOnly) {
  const MoeConfig config =
      layer_config({QuantMode::kFP8Block, Activation::kSwiGLU, false, true, 256, 128});
  auto source = make_random_weights(config, 31);
  const NaiveLayer naive(*source, config);
  auto b = loaded_backend(config, *source);
  const Tensor x = random_x(12, config, 32);
  const Routing routing = random_routing(12, config.num_experts, config.top_k, 33);

  const Tensor prior = random_x(12, config, 34);
  const std::vector<uint16_t> onto(prior.data_as<uint16_t>(),
                                   prior.data_as<uint16_t>() + prior.numel());
  const std::vector<uint16_t> acc = run_backend(*b, config, x, routing, {true, true, &onto});
  EXPECT_LE(compare(acc, naive.forward(x, routing, true, true, &onto), config.act_dtype),
            kOracleTolerance);
  const std::vector<uint16_t> plain = run_backend(*b, config, x, routing, {true, true, nullptr});
  EXPECT_GT(relative_l2(as_doubles(acc, config.act_dtype), as_doubles(plain, config.act_dtype)),
            0.1);

  // with_routed = false: the shared MLP alone (the ids are not even read).
  Routing no_routing{Tensor(), Tensor()};
  const std::vector<uint16_t> shared_only =
      run_backend(*b, config, x, no_routing, {false, true, nullptr});
  EXPECT_LE(compare(shared_only, naive.forward(x, routing, false, true, nullptr), config.act_dtype),
            kOracleTolerance);
  // Neither routed nor shared: zeros.
  const std::vector<uint16_t> nothing =
      run_backend(*b, config, x, no_routing, {false, false, nullptr});
  EXPECT_TRUE(std::all_of(nothing.begin(), nothing.end(), [](uint16_t v) { return v == 0; }));
  // with_shared on a layer without shared experts is an error.
  const MoeConfig plain_config =
      layer_config({QuantMode::kBF16, Activation::kSwiGLU, false, false, 256, 128});
  auto plain_source = make_random_weights(plain_config, 1);
  auto plain_backend = loaded_backend(plain_config, *plain_source);
  EXPECT_THROW(run_backend(*plain_backend, plain_config, random_x(2, plain_config, 1),
                           random_routing(2, 8, 2, 1), {true, true, nullptr}),
               Error);
}

TEST(ReferenceBackend, ZeroTokens) {
  for (QuantMode q : all_quant_modes()) {
    const MoeConfig config = layer_config({q, Activation::kSwiGLU, false, true, 256, 128});
    auto source = make_random_weights(config, 41);
    auto b = loaded_backend(config, *source);
    const Tensor x = Tensor::empty({0, config.hidden_size}, config.act_dtype);
    const Routing routing{Tensor::empty({0, config.top_k}, DType::kI32),
                          Tensor::empty({0, config.top_k}, DType::kF32)};
    const QuantizedInput qx = b->quantize_input(x, nullptr);
    EXPECT_EQ(qx.data.size(0), 0);
    EXPECT_NO_THROW(run_backend(*b, config, x, routing, {true, true, nullptr}))
        << quant_mode_name(q);
  }
}

TEST(ReferenceBackend, ExpertWithASingleToken) {
  const MoeConfig config =
      layer_config({QuantMode::kW4A8MXFP4MXFP8, Activation::kSwiGLUOAI, true, false, 256, 128});
  auto source = make_random_weights(config, 51);
  const NaiveLayer naive(*source, config);
  auto b = loaded_backend(config, *source);
  const int64_t tokens = 6;
  Routing routing = random_routing(tokens, 4, config.top_k, 52);  // experts 0..3 only
  routing.ids.data_as<int32_t>()[3 * config.top_k + 1] = 7;       // expert 7: one token
  const Tensor x = random_x(tokens, config, 53);
  EXPECT_LE(compare(run_backend(*b, config, x, routing),
                    naive.forward(x, routing, true, false, nullptr), config.act_dtype),
            kOracleTolerance);
}

TEST(ReferenceBackend, QuantizedInputFormats) {
  struct Expect {
    QuantMode q;
    DType data;
    DType scales;
    std::vector<int64_t> scale_shape;  // for T = 5, H = 200
  };
  const std::vector<Expect> expects = {
      {QuantMode::kBF16, DType::kBF16, DType::kF32, {}},
      {QuantMode::kFP8PerTensor, DType::kE4M3, DType::kF32, {1}},
      {QuantMode::kFP8Block, DType::kE4M3, DType::kF32, {5, 2}},
      {QuantMode::kNVFP4, DType::kBF16, DType::kF32, {}},
      {QuantMode::kW4A8MXFP4MXFP8, DType::kE4M3, DType::kUE8M0, {5, 7}},
  };
  for (const Expect& e : expects) {
    const int hidden = e.q == QuantMode::kFP8Block || e.q == QuantMode::kBF16 ? 200 : 224;
    MoeConfig config = layer_config({e.q, Activation::kSwiGLU, false, false, hidden, 128});
    auto source = make_random_weights(config, 61);
    auto b = loaded_backend(config, *source);
    const Tensor x = random_x(5, config, 62);
    const QuantizedInput q = b->quantize_input(x, nullptr);
    EXPECT_EQ(q.data.dtype(), e.data) << quant_mode_name(e.q);
    EXPECT_EQ(q.data.size(0), 5);
    EXPECT_EQ(q.data.size(1), hidden);
    if (e.scale_shape.empty()) {
      EXPECT_TRUE(q.scales.empty());
      EXPECT_EQ(q.data.data(), x.data());
    } else {
      EXPECT_EQ(q.scales.dtype(), e.scales);
      EXPECT_EQ(std::vector<int64_t>(q.scales.shape().begin(), q.scales.shape().end()),
                e.scale_shape)
          << quant_mode_name(e.q);
    }
    if (e.q == QuantMode::kFP8PerTensor) {
      EXPECT_EQ(q.scales.data_as<float>()[0], 6.0f / 448.0f);
    }
    // More tokens than max_num_tokens.
    EXPECT_THROW(b->quantize_input(random_x(config.max_num_tokens + 1, config, 1), nullptr), Error);
  }
}

// ---- Errors -------------------------------------------------------------------------------------

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

TEST(ReferenceBackend, WrongWeightShapeOrDtypeNamesTheTensor) {
  const MoeConfig config =
      layer_config({QuantMode::kFP8Block, Activation::kSwiGLU, true, false, 256, 128});
  auto random = make_random_weights(config, 71);
  MapWeightSource good;
  good.copy_from(*random, config);

  auto load = [&](MapWeightSource& src) {
    auto b = make_backend(config);
    b->create_weights();
    b->load_weights(src, LoadMode::kVanilla);
  };
  EXPECT_EQ(error_of([&] { load(good); }), "");

  MapWeightSource wrong_shape = good;
  wrong_shape.set(3, Proj::kUp, Part::kWeight, Tensor::empty({128, 255}, DType::kE4M3));
  std::string msg = error_of([&] { load(wrong_shape); });
  EXPECT_NE(msg.find("experts.3.up_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("e4m3[128, 256]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("e4m3[128, 255]"), std::string::npos) << msg;

  MapWeightSource wrong_dtype = good;
  wrong_dtype.set(5, Proj::kDown, Part::kScale, Tensor::empty({2, 1}, DType::kBF16));
  msg = error_of([&] { load(wrong_dtype); });
  EXPECT_NE(msg.find("experts.5.down_proj.weight_scale"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f32[2, 1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bf16[2, 1]"), std::string::npos) << msg;

  MapWeightSource missing = good;
  missing.erase(2, Proj::kGate, Part::kBias);
  msg = error_of([&] { load(missing); });
  EXPECT_NE(msg.find("experts.2.gate_proj.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST(ReferenceBackend, PostLoadValidationNamesTheBadElement) {
  const MoeConfig config =
      layer_config({QuantMode::kBF16, Activation::kSwiGLU, false, false, 256, 128});
  auto random = make_random_weights(config, 81);
  MapWeightSource src;
  src.copy_from(*random, config);
  src.find(6, Proj::kDown, Part::kWeight)->data_as<uint16_t>()[3 * 128 + 9] = 0x7FC0;  // NaN
  auto b = make_backend(config);
  b->create_weights();
  b->load_weights(src, LoadMode::kVanilla);
  std::string msg = error_of([&] { b->post_load_weights(); });
  EXPECT_NE(msg.find("experts.6.down_proj.weight[3, 9]"), std::string::npos) << msg;

  const MoeConfig fp8 =
      layer_config({QuantMode::kFP8PerTensor, Activation::kSwiGLU, false, false, 256, 128});
  auto random8 = make_random_weights(fp8, 82);
  MapWeightSource src8;
  src8.copy_from(*random8, fp8);
  src8.find(1, Proj::kGate, Part::kScale)->data_as<float>()[0] = -1.0f;
  auto b8 = make_backend(fp8);
  b8->create_weights();
  b8->load_weights(src8, LoadMode::kVanilla);
  msg = error_of([&] { b8->process_weights_after_loading(); });
  EXPECT_NE(msg.find("experts.1.gate_proj.weight_scale[0]"), std::string::npos) << msg;
}

TEST(ReferenceBackend, OutOfRangeExpertIdAndLifecycleErrors) {
  const MoeConfig config =
      layer_config({QuantMode::kBF16, Activation::kSwiGLU, false, false, 256, 128});
  auto source = make_random_weights(config, 91);
  auto b = make_backend(config);
  const Tensor x = random_x(4, config, 92);
  Routing routing = random_routing(4, config.num_experts, config.top_k, 93);
  std::string msg = error_of([&] { run_backend(*b, config, x, routing); });
  EXPECT_NE(msg.find("load"), std::string::npos) << msg;
  EXPECT_THROW(b->load_weights(*source, LoadMode::kVanilla), Error);  // before create_weights
  b->create_weights();
  b->load_weights(*source, LoadMode::kVanilla);
  b->post_load_weights();

  routing.ids.data_as<int32_t>()[2 * config.top_k + 1] = 8;
  msg = error_of([&] { run_backend(*b, config, x, routing); });
  EXPECT_NE(msg.find("topk_ids[2, 1] = 8"), std::string::npos) << msg;
  routing.ids.data_as<int32_t>()[2 * config.top_k + 1] = -1;
  msg = error_of([&] { run_backend(*b, config, x, routing); });
  EXPECT_NE(msg.find("topk_ids[2, 1] = -1"), std::string::npos) << msg;
}

// ---- Reload and determinism
// -----------------------------------------------------------------------

TEST(ReferenceBackend, ReloadWithOtherWeightsChangesTheOutput) {
  const MoeConfig config =
      layer_config({QuantMode::kNVFP4, Activation::kSwiGLU, false, true, 256, 128});
  auto first = make_random_weights(config, 101);
  auto second = make_random_weights(config, 102);
  auto b = loaded_backend(config, *first);
  const Tensor x = random_x(8, config, 103);
  const Routing routing = random_routing(8, config.num_experts, config.top_k, 104);
  const std::vector<uint16_t> before = run_backend(*b, config, x, routing, {true, true, nullptr});

  b->pre_reload_weights();
  const std::string msg = error_of([&] { run_backend(*b, config, x, routing); });
  EXPECT_NE(msg.find("before the weights are loaded"), std::string::npos) << msg;
  b->load_weights(*second, LoadMode::kVanilla);
  b->process_weights_after_loading();
  const std::vector<uint16_t> after = run_backend(*b, config, x, routing, {true, true, nullptr});
  EXPECT_GT(relative_l2(as_doubles(after, config.act_dtype), as_doubles(before, config.act_dtype)),
            0.5);
  const NaiveLayer naive(*second, config);
  EXPECT_LE(compare(after, naive.forward(x, routing, true, true, nullptr), config.act_dtype),
            kOracleTolerance);

  // Reloading the first weights gives the first output back, bit for bit.
  b->pre_reload_weights();
  b->load_weights(*first, LoadMode::kVanilla);
  b->post_load_weights();
  EXPECT_EQ(run_backend(*b, config, x, routing, {true, true, nullptr}), before);
}

TEST(ReferenceBackend, TwoRunsAreBitIdentical) {
  const MoeConfig config =
      layer_config({QuantMode::kFP8Block, Activation::kSwiGLUOAI, true, true, 200, 72});
  auto source = make_random_weights(config, 111);
  auto b = loaded_backend(config, *source);
  const Tensor x = random_x(40, config, 112);
  const Routing routing = random_routing(40, config.num_experts, config.top_k, 113);
  const std::vector<uint16_t> a = run_backend(*b, config, x, routing, {true, true, nullptr});
  EXPECT_EQ(a, run_backend(*b, config, x, routing, {true, true, nullptr}));
  auto other = loaded_backend(config, *make_random_weights(config, 111));
  EXPECT_EQ(a, run_backend(*other, config, x, routing, {true, true, nullptr}));
}

// ---- Speed: one Qwen3-30B-A3B layer, 64 tokens
// -----------------------------------------------------

TEST(ReferenceBackend, Qwen3LayerAt64TokensRunsInSeconds) {
  MoeConfig config = moe::testing::small_config(128, 8, 2048, 768);
  config.name = "qwen3-30b-a3b-shaped";
  auto source = make_random_weights(config, 121);
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  auto b = loaded_backend(config, *source);
  const auto t1 = Clock::now();
  const Tensor x = random_x(64, config, 122);
  const Routing routing = random_routing(64, config.num_experts, config.top_k, 123);
  const std::vector<uint16_t> out = run_backend(*b, config, x, routing);
  const auto t2 = Clock::now();
  const auto seconds = [](auto d) { return std::chrono::duration<double>(d).count(); };
  std::printf(
      "[ reference ] qwen3-30b-a3b layer (E=128, k=8, H=2048, I=768, bf16), 64 tokens, "
      "%d threads: load %.2f s, run_moe %.3f s\n",
      cpu_num_threads(), seconds(t1 - t0), seconds(t2 - t1));
  const std::vector<double> d = as_doubles(out, config.act_dtype);
  EXPECT_TRUE(std::all_of(d.begin(), d.end(), [](double v) { return std::isfinite(v); }));
  EXPECT_GT(std::count_if(d.begin(), d.end(), [](double v) { return v != 0; }),
            static_cast<long>(d.size() / 2));
}

}  // namespace
}  // namespace moe
