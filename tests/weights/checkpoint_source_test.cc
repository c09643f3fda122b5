// CheckpointSource: tiny checkpoints of every family and layout, written by the test with the
// safetensors writer from canonical random weights (make_random_weights), then
//   1. every tensor the source serves (kGate/kUp/kDown and kGateUp, every part) equals the
//      canonical tensor bit for bit (de-interleaving, transposes, splits and concatenations);
//   2. the layer loaded from the checkpoint through the reference backend, in both load
//      modes, computes the same output as the layer loaded from the canonical tensors;
//   3. family, layout, quant mode and shapes are discovered (inspect, detect_quant_mode);
//   4. bad checkpoints give one error naming the file/tensor and what is wrong;
//   5. an expert-parallel rank asks only for its own experts.
#include "weights/checkpoint_source.h"

#include <gtest/gtest.h>

#include <unistd.h>
#include <cstdlib>

#include <cctype>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "backends/reference/reference_backend.h"
#include "common/test_util.h"
#include "core/compare.h"
#include "core/random.h"
#include "moe/moe.h"
#include "quant/formats.h"
#include "weights/safetensors.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using testing::MapWeightSource;

struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    path = fs::temp_directory_path() / ("moe_ckpt_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  ADD_FAILURE() << "expected a moe::Error";
  return "";
}

// ---- Configurations -----------------------------------------------------------------------

MoeConfig base_config(const std::string& name, int experts, int top_k, int hidden, int inter,
                      QuantMode quant) {
  MoeConfig c = testing::small_config(experts, top_k, hidden, inter);
  c.name = name;
  c.quant = quant;
  c.act_dtype = quant == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
  return c;
}

MoeConfig deepseek_config(QuantMode quant, int hidden, int inter) {
  MoeConfig c = base_config("deepseek_v3", 16, 4, hidden, inter, quant);
  c.routing.method = RoutingMethod::kDeepSeekV3;
  c.routing.num_groups = 4;
  c.routing.topk_groups = 2;
  c.routing.routed_scaling_factor = 2.5f;
  c.routing.has_correction_bias = true;
  c.num_shared_experts = 1;
  c.shared_intermediate_size = inter;
  return c;
}

MoeConfig gpt_oss_config(QuantMode quant) {
  MoeConfig c = base_config("gpt_oss", 8, 2, 64, 64, quant);
  c.activation = Activation::kSwiGLUOAI;
  c.routing.method = RoutingMethod::kGptOss;
  c.has_router_bias = true;
  c.has_expert_biases = true;
  return c;
}

MoeConfig llama4_config() {
  MoeConfig c = base_config("llama4", 8, 1, 64, 96, QuantMode::kBF16);
  c.routing.method = RoutingMethod::kLlama4;
  c.routing.renormalize = false;
  c.apply_router_weight_on_input = true;
  c.num_shared_experts = 1;
  c.shared_intermediate_size = 96;
  return c;
}

// ---- Writing checkpoints from canonical tensors -----------------------------------------

enum class Style { kMixtral, kStandard, kGptOss, kLlama4 };
enum class Layout { kPerExpert, kPerExpertFused, kStacked };

struct Case {
  std::string name;
  MoeConfig config;
  Style style;
  Layout layout;
  std::string layer_prefix = "model.layers.1.";
  int shards = 1;
  bool f32_file = false;     // 16-bit weights stored as F32 (OLMoE's fp32 checkpoints)
  bool bf16_biases = false;  // biases stored as BF16 (GPT-OSS)
};

constexpr int kLayer = 1;

// Tensors to write; owns their bytes.
class CkptBuilder {
 public:
  void add(const std::string& name, const TensorView& t) {
    owned_.push_back(testing::clone(t));
    tensors_.push_back(st_write_tensor(name, owned_.back()));
  }
  void add_raw(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
               Tensor bytes) {
    owned_.push_back(std::move(bytes));
    tensors_.push_back({name, dtype, std::move(shape), owned_.back().data()});
  }
  void add_scalar(const std::string& name, float v) {
    Tensor t = Tensor::empty({1}, DType::kF32);
    *t.data_as<float>() = v;
    add_raw(name, "F32", {}, std::move(t));
  }
  void erase(const std::string& name) {
    std::erase_if(tensors_, [&](const StWriteTensor& t) { return t.name == name; });
  }
  // Writes `shards` files (round-robin) and, when sharded, the index.
  void write(const std::string& dir, int shards) const {
    std::vector<std::vector<StWriteTensor>> files(shards);
    std::map<std::string, std::string> weight_map;
    uint64_t total = 0;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const int s = static_cast<int>(i % shards);
      files[s].push_back(tensors_[i]);
      uint64_t numel = 1;
      for (int64_t d : tensors_[i].shape) numel *= d;
      total += numel * find_st_dtype(tensors_[i].dtype)->bits / 8;
      const std::string file = shards == 1 ? "model.safetensors"
                                           : "model-0000" + std::to_string(s + 1) + "-of-0000" +
                                                 std::to_string(shards) + ".safetensors";
      weight_map[tensors_[i].name] = file;
    }
    for (int s = 0; s < shards; ++s) {
      const std::string file = shards == 1 ? "model.safetensors"
                                           : "model-0000" + std::to_string(s + 1) + "-of-0000" +
                                                 std::to_string(shards) + ".safetensors";
      write_safetensors((fs::path(dir) / file).string(), files[s], {{"format", "pt"}});
    }
    if (shards > 1) write_safetensors_index(dir, weight_map, total);
  }

 private:
  std::deque<Tensor> owned_;
  std::vector<StWriteTensor> tensors_;
};

std::string suffix(QuantMode q, Part p) {
  switch (p) {
    case Part::kWeight:
      return "weight";
    case Part::kScale:
      return q == QuantMode::kFP8Block ? "weight_scale_inv" : "weight_scale";
    case Part::kGlobalScale:
      return "weight_scale_2";
    case Part::kInputScale:
      return "input_scale";
    case Part::kBias:
      return "bias";
  }
  return "";
}

constexpr Part kParts[] = {Part::kWeight, Part::kScale, Part::kGlobalScale, Part::kInputScale,
                           Part::kBias};

// Block, router and projection names of a style.
struct StyleNames {
  std::string block, router, router_bias, correction, shared;
  std::map<Proj, std::string> proj;
};

StyleNames names_of(Style s) {
  const std::map<Proj, std::string> hf = {{Proj::kGate, "gate_proj"},
                                          {Proj::kUp, "up_proj"},
                                          {Proj::kDown, "down_proj"},
                                          {Proj::kGateUp, "gate_up_proj"}};
  switch (s) {
    case Style::kMixtral:
      return {"block_sparse_moe.",
              "gate.weight",
              "",
              "",
              "",
              {{Proj::kGate, "w1"}, {Proj::kUp, "w3"}, {Proj::kDown, "w2"}}};
    case Style::kStandard:
      return {"mlp.", "gate.weight", "", "gate.e_score_correction_bias", "shared_experts.", hf};
    case Style::kGptOss:
      return {"mlp.", "router.weight", "router.bias", "", "", hf};
    case Style::kLlama4:
      return {"feed_forward.", "router.weight", "", "", "shared_expert.", hf};
  }
  return {};
}

// A copy of `t` in bf16 or f32 as the case stores it.
Tensor stored(const Case& c, Part part, const Tensor& t) {
  const bool as_f32 = c.f32_file && part == Part::kWeight && is_float_activation(t.dtype());
  const bool as_bf16 = c.bf16_biases && part == Part::kBias;
  if (!as_f32 && !as_bf16) return testing::clone(t);
  const std::vector<double> v = to_doubles(t);
  Tensor out = Tensor::empty(t.shape(), as_f32 ? DType::kF32 : DType::kBF16);
  for (size_t i = 0; i < v.size(); ++i) {
    if (as_f32)
      out.data_as<float>()[i] = static_cast<float>(v[i]);
    else
      out.data_as<uint16_t>()[i] = fmt::float_to_bf16(static_cast<float>(v[i]));
  }
  return out;
}

// Rounds the canonical biases to bf16 so that a checkpoint storing them in bf16 serves the
// same values.
void round_biases_to_bf16(MapWeightSource& m, const MoeConfig& c) {
  for (int e = 0; e < c.num_experts; ++e) {
    for (Proj p : {Proj::kGate, Proj::kUp, Proj::kDown, Proj::kGateUp}) {
      if (Tensor* b = m.find(e, p, Part::kBias)) {
        for (int64_t i = 0; i < b->numel(); ++i) {
          float& v = b->data_as<float>()[i];
          v = fmt::round_bf16(v);
        }
      }
    }
  }
}

// Rows [r] of an expert's weight-like tensor [rows, row_bytes], interleaving gate and up rows
// when asked: out row 2i = gate row i, 2i + 1 = up row i. Otherwise [gate; up].
Tensor gate_up_rows(const Tensor& gate, const Tensor& up, bool interleave) {
  const int64_t rows = gate.size(0);
  const size_t row_bytes = gate.nbytes() / rows;
  std::vector<int64_t> shape(gate.shape().begin(), gate.shape().end());
  shape[0] *= 2;
  Tensor out = Tensor::empty(shape, gate.dtype());
  auto* dst = out.data_as<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t gi = interleave ? 2 * r : r, ui = interleave ? 2 * r + 1 : rows + r;
    std::memcpy(dst + gi * row_bytes, gate.data_as<uint8_t>() + r * row_bytes, row_bytes);
    std::memcpy(dst + ui * row_bytes, up.data_as<uint8_t>() + r * row_bytes, row_bytes);
  }
  return out;
}

// [rows, cols] 2-byte elements -> [cols, rows].
Tensor transpose16(const Tensor& t) {
  const int64_t rows = t.size(0), cols = t.size(1);
  Tensor out = Tensor::empty({cols, rows}, t.dtype());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      out.data_as<uint16_t>()[c * rows + r] = t.data_as<uint16_t>()[r * cols + c];
    }
  }
  return out;
}

// Concatenates per-expert tensors along a new leading dimension, in the dtype and inner
// shape given.
Tensor stack(const std::vector<Tensor>& parts) {
  std::vector<int64_t> shape = {static_cast<int64_t>(parts.size())};
  shape.insert(shape.end(), parts[0].shape().begin(), parts[0].shape().end());
  Tensor out = Tensor::empty(shape, parts[0].dtype());
  auto* dst = out.data_as<uint8_t>();
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.data(), p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

// Writes the case's checkpoint from the canonical (vanilla) tensors.
CkptBuilder build_checkpoint(const Case& c, MapWeightSource& canon) {
  const MoeConfig& cfg = c.config;
  const QuantMode q = cfg.quant;
  const StyleNames n = names_of(c.style);
  const std::string block = c.layer_prefix + n.block;
  CkptBuilder b;
  b.add(block + n.router, canon.router_weight_tensor);
  if (!n.router_bias.empty() && canon.router_bias_tensor.defined()) {
    b.add(block + n.router_bias, canon.router_bias_tensor);
  }
  if (!n.correction.empty() && canon.correction_bias_tensor.defined()) {
    b.add(block + n.correction, canon.correction_bias_tensor);
  }
  // A dense MLP on layer 0 (DeepSeek's first layers): not an MoE layer.
  Tensor dense = Tensor::empty({8, cfg.hidden_size}, DType::kBF16);
  fill_normal(dense, 5);
  b.add("model.layers.0.mlp.gate_proj.weight", dense);
  b.add("model.embed_tokens.weight", dense);

  // Per-expert tensors (fused or not) of one expert under `base`.
  auto per_expert = [&](int e, const std::string& base, bool fused) {
    for (Part part : kParts) {
      const std::vector<Proj> projs = fused
                                          ? std::vector<Proj>{Proj::kGateUp, Proj::kDown}
                                          : std::vector<Proj>{Proj::kGate, Proj::kUp, Proj::kDown};
      for (Proj p : projs) {
        Tensor t;
        if (p == Proj::kGateUp) {
          Tensor* g = canon.find(e, Proj::kGate, part);
          Tensor* u = canon.find(e, Proj::kUp, part);
          if (!g) continue;
          if (g->numel() == 1 && part != Part::kWeight && part != Part::kBias) {
            t = Tensor::empty({2}, DType::kF32);  // per-tensor values: [2] = (gate, up)
            t.data_as<float>()[0] = *g->data_as<float>();
            t.data_as<float>()[1] = *u->data_as<float>();
          } else {
            t = gate_up_rows(*g, *u, false);
          }
        } else {
          Tensor* s = canon.find(e, p, part);
          if (!s) continue;
          t = testing::clone(*s);
        }
        const std::string name = base + n.proj.at(p) + "." + suffix(q, part);
        const bool scalar = (part == Part::kGlobalScale || part == Part::kInputScale ||
                             (part == Part::kScale && q == QuantMode::kFP8PerTensor)) &&
                            t.numel() == 1;
        if (scalar)
          b.add_scalar(name, *t.data_as<float>());  // ModelOpt writes shape []
        else
          b.add(name, stored(c, part, t));
      }
    }
  };

  if (c.layout == Layout::kStacked) {
    const bool mx = q == QuantMode::kMXFP4;
    const bool interleave = c.style == Style::kGptOss;
    const bool transpose = c.style == Style::kLlama4 || (c.style == Style::kGptOss && !mx);
    for (Part part : {Part::kWeight, Part::kScale, Part::kBias}) {
      std::vector<Tensor> gate_up, down;
      for (int e = 0; e < cfg.num_experts; ++e) {
        Tensor* g = canon.find(e, Proj::kGate, part);
        if (!g) break;
        Tensor gu = stored(c, part, gate_up_rows(*g, *canon.find(e, Proj::kUp, part), interleave));
        Tensor d = stored(c, part, *canon.find(e, Proj::kDown, part));
        if (part == Part::kWeight && transpose) {
          gu = transpose16(gu);
          d = transpose16(d);
        }
        gate_up.push_back(std::move(gu));
        down.push_back(std::move(d));
      }
      if (gate_up.empty()) continue;
      const std::string sfx = part == Part::kWeight  ? (mx ? "_blocks" : "")
                              : part == Part::kScale ? "_scales"
                                                     : "_bias";
      for (auto& [proj, tensors] :
           {std::pair{"gate_up_proj", &gate_up}, std::pair{"down_proj", &down}}) {
        Tensor s = stack(*tensors);
        const std::string name = block + "experts." + proj + sfx;
        if (part == Part::kWeight && mx) {  // GPT-OSS blocks [E, rows, cols/32, 16]
          b.add_raw(name, "U8", {s.size(0), s.size(1), s.size(2) / 32, 16}, std::move(s));
        } else {
          b.add(name, s);
        }
      }
    }
  } else {
    for (int e = 0; e < cfg.num_experts; ++e) {
      per_expert(e, block + "experts." + std::to_string(e) + ".",
                 c.layout == Layout::kPerExpertFused);
    }
  }
  if (cfg.num_shared_experts > 0) per_expert(kSharedExpert, block + n.shared, false);
  return b;
}

MapWeightSource canonical(const MoeConfig& c, LoadMode mode, uint64_t seed = 11) {
  auto random = make_random_weights(c, seed);
  MapWeightSource m;
  m.copy_from(*random, c, mode);
  return m;
}

// Same dtype and shape and the same bytes; a bf16 bias may stand for an f32 one (values).
void expect_same_tensor(const TensorView& got, const TensorView& want, const std::string& what) {
  ASSERT_FALSE(got.empty()) << what << ": not served";
  ASSERT_EQ(std::vector<int64_t>(got.shape().begin(), got.shape().end()),
            std::vector<int64_t>(want.shape().begin(), want.shape().end()))
      << what << ": got " << got.str() << ", want " << want.str();
  if (got.dtype() == want.dtype()) {
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.nbytes()), 0) << what;
  } else {
    EXPECT_EQ(to_doubles(got), to_doubles(want))
        << what << ": " << got.str() << " vs " << want.str();
  }
}

struct Written {
  TempDir dir;
  MapWeightSource vanilla;  // canonical per-expert tensors
  MapWeightSource fused;    // canonical kGateUp tensors
};

// Whether the canonical fused gate_up tensors exist (fp8_block splits need I % 128 == 0).
bool has_fused_canonical(const MoeConfig& c) {
  return c.quant != QuantMode::kFP8Block || c.intermediate_size % 128 == 0;
}

std::unique_ptr<Written> write_case(const Case& c) {
  auto w = std::make_unique<Written>();
  w->vanilla = canonical(c.config, LoadMode::kVanilla);
  if (has_fused_canonical(c.config)) w->fused = canonical(c.config, LoadMode::kFusedGateUpProj);
  if (c.bf16_biases) {
    round_biases_to_bf16(w->vanilla, c.config);
    round_biases_to_bf16(w->fused, c.config);
  }
  build_checkpoint(c, w->vanilla).write(w->dir.str(), c.shards);
  return w;
}

Tensor random_input(const MoeConfig& c, int64_t tokens, uint64_t seed) {
  Tensor x = Tensor::empty({tokens, c.hidden_size}, c.act_dtype);
  fill_normal(x, seed);
  return x;
}

// The layer's output with weights from `source` loaded in `mode`.
Tensor run_layer(const MoeConfig& c, WeightSource& source, LoadMode mode, const Tensor& x) {
  MoeOptions options;
  options.backend = "reference";
  auto moe = create_moe(c, {}, options).moe;
  moe->load_weights(source, mode);
  Tensor out = Tensor::empty({x.size(0), c.hidden_size}, c.act_dtype);
  fill_poison(out);
  moe->forward(x, {}, out);
  return out;
}

// ---- Every family and layout ------------------------------------------------------------

std::vector<Case> all_cases() {
  std::vector<Case> v;
  v.push_back({"mixtral_bf16", base_config("mixtral", 8, 2, 64, 96, QuantMode::kBF16),
               Style::kMixtral, Layout::kPerExpert});
  v.push_back({"mixtral_fp8_per_tensor",
               base_config("mixtral", 8, 2, 64, 96, QuantMode::kFP8PerTensor), Style::kMixtral,
               Layout::kPerExpert});
  v.push_back({"qwen3_bf16", base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kBF16),
               Style::kStandard, Layout::kPerExpert});
  v.push_back({"qwen3_bf16_per_expert_fused",
               base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kBF16), Style::kStandard,
               Layout::kPerExpertFused});
  v.push_back({"qwen3_bf16_stacked", base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kBF16),
               Style::kStandard, Layout::kStacked});
  v.push_back({"olmoe_f32_file", base_config("olmoe", 8, 2, 64, 96, QuantMode::kBF16),
               Style::kStandard, Layout::kPerExpert, "model.layers.1.", 1, true});
  v.push_back({"qwen3_fp16", base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kFP16),
               Style::kStandard, Layout::kPerExpert});
  v.push_back({"deepseek_v3_bf16_shared", deepseek_config(QuantMode::kBF16, 64, 96),
               Style::kStandard, Layout::kPerExpert});
  // Partial 128x128 blocks: H = 192, I = 160.
  v.push_back({"deepseek_v3_fp8_block", deepseek_config(QuantMode::kFP8Block, 192, 160),
               Style::kStandard, Layout::kPerExpert});
  v.push_back({"deepseek_v3_fp8_block_fused", deepseek_config(QuantMode::kFP8Block, 192, 128),
               Style::kStandard, Layout::kPerExpertFused});
  v.push_back({"deepseek_v3_fp8_block_sharded", deepseek_config(QuantMode::kFP8Block, 192, 160),
               Style::kStandard, Layout::kPerExpert, "model.layers.1.", 3});
  v.push_back({"gpt_oss_mxfp4", gpt_oss_config(QuantMode::kMXFP4), Style::kGptOss, Layout::kStacked,
               "model.layers.1.", 1, false, true});
  v.push_back({"gpt_oss_bf16", gpt_oss_config(QuantMode::kBF16), Style::kGptOss, Layout::kStacked,
               "model.layers.1.", 1, false, true});
  v.push_back({"modelopt_nvfp4", base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kNVFP4),
               Style::kStandard, Layout::kPerExpert});
  v.push_back({"modelopt_nvfp4_fused", base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kNVFP4),
               Style::kStandard, Layout::kPerExpertFused});
  v.push_back({"llama4_transposed_shared", llama4_config(), Style::kLlama4, Layout::kStacked,
               "language_model.model.layers.1."});
  v.push_back({"llama4_text_sharded", llama4_config(), Style::kLlama4, Layout::kStacked,
               "model.layers.1.", 2});
  return v;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class CheckpointFamilies : public ::testing::TestWithParam<Case> {};

TEST_P(CheckpointFamilies, ServesCanonicalTensorsInBothModes) {
  const Case& c = GetParam();
  auto w = write_case(c);
  CheckpointSource src(SafetensorsCheckpoint::open(w->dir.str()), c.config, kLayer);
  EXPECT_EQ(src.info().quant, c.config.quant);
  EXPECT_EQ(src.info().num_experts, c.config.num_experts);
  EXPECT_EQ(src.info().intermediate_size, c.config.intermediate_size);
  EXPECT_EQ(src.info().shared_intermediate_size, c.config.shared_intermediate_size);
  EXPECT_EQ(src.natural_load_mode(),
            c.layout == Layout::kPerExpert ? LoadMode::kVanilla : LoadMode::kFusedGateUpProj);

  std::vector<int> experts;
  for (int e = 0; e < c.config.num_experts; ++e) experts.push_back(e);
  if (c.config.num_shared_experts > 0) experts.push_back(kSharedExpert);
  // kGateUp: random weights' fused tensors, or (where they cannot be split, I % 128 != 0 in
  // fp8_block) the gate's rows followed by the up's.
  const bool fused_canonical = has_fused_canonical(c.config);
  int compared = 0;
  for (int e : experts) {
    for (Proj p : {Proj::kGate, Proj::kUp, Proj::kDown, Proj::kGateUp}) {
      MapWeightSource& want_src = p == Proj::kGateUp ? w->fused : w->vanilla;
      for (Part part : kParts) {
        const std::string what = c.name + " " + expert_tensor_name(e, p, part);
        Tensor* want = want_src.find(e, p, part);
        Tensor concatenated;
        if (p == Proj::kGateUp && !fused_canonical && w->vanilla.find(e, Proj::kGate, part)) {
          concatenated = gate_up_rows(*w->vanilla.find(e, Proj::kGate, part),
                                      *w->vanilla.find(e, Proj::kUp, part), false);
          want = &concatenated;
        }
        const TensorView got = src.expert_tensor(e, p, part);
        if (want == nullptr) {
          EXPECT_TRUE(got.empty()) << what << ": served " << got.str() << " the canonical lacks";
          continue;
        }
        // A per-tensor pair (gate, up) is served as [2].
        expect_same_tensor(got, *want, what);
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 0);
  expect_same_tensor(src.router_weight(), w->vanilla.router_weight_tensor, "router weight");
  if (c.config.has_router_bias) {
    expect_same_tensor(src.router_bias(), w->vanilla.router_bias_tensor, "router bias");
  }
  if (c.config.routing.has_correction_bias) {
    expect_same_tensor(src.correction_bias(), w->vanilla.correction_bias_tensor, "correction bias");
  }
  EXPECT_GT(src.stats().bytes, 0u);
  EXPECT_NE(src.stats().str().find("GB/s"), std::string::npos);
}

TEST_P(CheckpointFamilies, LayerMatchesCanonicalWeights) {
  const Case& c = GetParam();
  auto w = write_case(c);
  const Tensor x = random_input(c.config, 24, 3);
  const Tensor want = run_layer(c.config, w->vanilla, LoadMode::kVanilla, x);
  double sum_sq = 0;
  for (double v : to_doubles(want)) sum_sq += v * v;
  ASSERT_GT(sum_sq, 0.0) << "the layer's output is all zeros: the comparison would prove nothing";
  for (LoadMode mode : {LoadMode::kVanilla, LoadMode::kFusedGateUpProj}) {
    if (mode == LoadMode::kFusedGateUpProj && c.config.quant == QuantMode::kFP8Block &&
        c.config.intermediate_size % 128 != 0) {
      continue;  // fused fp8_block scales cannot be split for I % 128 != 0
    }
    auto src = CheckpointSource::open(w->dir.str(), c.config, kLayer);
    const Tensor got = run_layer(c.config, *src, mode, x);
    EXPECT_LT(relative_l2(got, want), 1e-6) << c.name << " load mode " << static_cast<int>(mode);
  }
}

TEST_P(CheckpointFamilies, DiscoversTheLayer) {
  const Case& c = GetParam();
  auto w = write_case(c);
  auto ckpt = SafetensorsCheckpoint::open(w->dir.str());
  EXPECT_EQ(detect_quant_mode(*ckpt, kLayer, std::nullopt), c.config.quant);
  const std::vector<MoeLayerInfo> layers = list_moe_layers(*ckpt);
  ASSERT_EQ(layers.size(), 1u) << "layer 0 is dense";
  const MoeLayerInfo& info = layers[0];
  EXPECT_EQ(info.layer, kLayer);
  EXPECT_EQ(info.prefix.rfind(c.layer_prefix, 0), 0u) << info.prefix;
  EXPECT_EQ(info.hidden_size, c.config.hidden_size);
  EXPECT_EQ(info.intermediate_size, c.config.intermediate_size);
  EXPECT_EQ(info.has_expert_biases, c.config.has_expert_biases);
  EXPECT_EQ(info.has_router_bias, c.config.has_router_bias);
  EXPECT_EQ(info.has_correction_bias, c.config.routing.has_correction_bias);
  EXPECT_EQ(info.interleaved, c.style == Style::kGptOss);
  EXPECT_EQ(info.transposed, c.layout == Layout::kStacked && c.config.quant == QuantMode::kBF16 &&
                                 c.style != Style::kStandard);
  EXPECT_GT(info.bytes, 0u);
  const std::map<Style, CheckpointFamily> family = {{Style::kMixtral, CheckpointFamily::kMixtral},
                                                    {Style::kStandard, CheckpointFamily::kStandard},
                                                    {Style::kGptOss, CheckpointFamily::kGptOss},
                                                    {Style::kLlama4, CheckpointFamily::kLlama4}};
  EXPECT_EQ(info.family, family.at(c.style));
  const std::string dense = error_of([&] { inspect_moe_layer(*ckpt, 0); });
  EXPECT_NE(dense.find("layer 0 has no MoE router"), std::string::npos) << dense;
}

INSTANTIATE_TEST_SUITE_P(All, CheckpointFamilies, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) { return info.param.name; });

// ---- GPT-OSS: de-interleaving, element by element -------------------------------------------

TEST(CheckpointGptOss, DeinterleavesGateAndUpRows) {
  const MoeConfig c = gpt_oss_config(QuantMode::kMXFP4);
  const int64_t e_count = c.num_experts, h = c.hidden_size, i2 = 2 * c.intermediate_size;
  TempDir dir;
  // Every byte encodes (expert, file row, column) so that a misplaced row is seen.
  auto code = [](int64_t e, int64_t r, int64_t col) {
    return static_cast<uint8_t>(mix64((e * 1000 + r) * 1000 + col));
  };
  Tensor blocks = Tensor::empty({e_count * i2 * (h / 2)}, DType::kU8);
  Tensor scales = Tensor::empty({e_count * i2 * (h / 32)}, DType::kU8);
  Tensor bias = Tensor::empty({e_count * i2}, DType::kF32);
  for (int64_t e = 0; e < e_count; ++e) {
    for (int64_t r = 0; r < i2; ++r) {
      for (int64_t col = 0; col < h / 2; ++col)
        blocks.data_as<uint8_t>()[(e * i2 + r) * (h / 2) + col] = code(e, r, col);
      for (int64_t col = 0; col < h / 32; ++col) {
        scales.data_as<uint8_t>()[(e * i2 + r) * (h / 32) + col] = 120 + code(e, r, col) % 8;
      }
      bias.data_as<float>()[e * i2 + r] = static_cast<float>(e * 1000 + r);
    }
  }
  CkptBuilder b;
  Tensor router = Tensor::empty({e_count, h}, DType::kBF16);
  fill_normal(router, 1);
  Tensor router_bias = Tensor::empty({e_count}, DType::kBF16);
  fill_normal(router_bias, 2);
  b.add("model.layers.1.mlp.router.weight", router);
  b.add("model.layers.1.mlp.router.bias", router_bias);
  b.add_raw("model.layers.1.mlp.experts.gate_up_proj_blocks", "U8", {e_count, i2, h / 32, 16},
            blocks);
  b.add_raw("model.layers.1.mlp.experts.gate_up_proj_scales", "U8", {e_count, i2, h / 32}, scales);
  b.add_raw("model.layers.1.mlp.experts.gate_up_proj_bias", "F32", {e_count, i2}, bias);
  b.write(dir.str(), 1);
  // (down_proj is not written: only gate/up are requested here)
  CheckpointSource src(SafetensorsCheckpoint::open(dir.str()), c, kLayer);
  for (int64_t e = 0; e < e_count; ++e) {
    for (Proj p : {Proj::kGate, Proj::kUp, Proj::kGateUp}) {
      const TensorView w = src.expert_tensor(static_cast<int>(e), p, Part::kWeight);
      const int64_t rows = p == Proj::kGateUp ? i2 : i2 / 2;
      ASSERT_EQ(w.dtype(), DType::kE2M1);
      ASSERT_EQ(w.size(0), rows);
      ASSERT_EQ(w.size(1), h);
      for (int64_t r = 0; r < rows; ++r) {
        // gate row j = file row 2j; up row j = file row 2j + 1; kGateUp = [gate | up].
        const int64_t j = r % (i2 / 2);
        const bool is_up = p == Proj::kUp || (p == Proj::kGateUp && r >= i2 / 2);
        const int64_t file_row = 2 * j + (is_up ? 1 : 0);
        for (int64_t col = 0; col < h / 2; ++col) {
          ASSERT_EQ(w.data_as<uint8_t>()[r * (h / 2) + col], code(e, file_row, col))
              << "expert " << e << " proj " << proj_name(p) << " row " << r << " byte " << col;
        }
      }
      const TensorView s = src.expert_tensor(static_cast<int>(e), p, Part::kScale);
      ASSERT_EQ(s.dtype(), DType::kUE8M0);
      const TensorView bv = src.expert_tensor(static_cast<int>(e), p, Part::kBias);
      ASSERT_EQ(bv.numel(), rows);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t j = r % (i2 / 2);
        const bool is_up = p == Proj::kUp || (p == Proj::kGateUp && r >= i2 / 2);
        EXPECT_EQ(bv.data_as<float>()[r], static_cast<float>(e * 1000 + 2 * j + (is_up ? 1 : 0)));
      }
    }
  }
  // The bf16 router bias is served as f32.
  const TensorView rb = src.router_bias();
  ASSERT_EQ(rb.dtype(), DType::kF32);
  EXPECT_EQ(rb.data_as<float>()[3], fmt::bf16_to_float(router_bias.data_as<uint16_t>()[3]));
  // The missing down_proj is reported by name.
  const std::string msg = error_of([&] { src.expert_tensor(0, Proj::kDown, Part::kWeight); });
  EXPECT_NE(msg.find("model.layers.1.mlp.experts.down_proj_blocks"), std::string::npos) << msg;
}

// ---- Bad checkpoints ----------------------------------------------------------------------

// Writes `c` after `edit` changed the builder.
std::unique_ptr<Written> write_edited(const Case& c,
                                      const std::function<void(CkptBuilder&)>& edit) {
  auto w = std::make_unique<Written>();
  w->vanilla = canonical(c.config, LoadMode::kVanilla);
  CkptBuilder b = build_checkpoint(c, w->vanilla);
  edit(b);
  b.write(w->dir.str(), c.shards);
  return w;
}

std::string load_error(const Written& w, const MoeConfig& config) {
  return error_of([&] {
    auto src = CheckpointSource::open(w.dir.str(), config, kLayer);
    run_layer(config, *src, LoadMode::kVanilla, random_input(config, 4, 1));
  });
}

TEST(CheckpointErrors, MissingExpertNamesTheTensor) {
  for (int shards : {1, 2}) {
    Case c{"qwen3",           base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kBF16),
           Style::kStandard,  Layout::kPerExpert,
           "model.layers.1.", shards};
    auto w = write_edited(
        c, [](CkptBuilder& b) { b.erase("model.layers.1.mlp.experts.5.up_proj.weight"); });
    const std::string msg = load_error(*w, c.config);
    EXPECT_NE(msg.find("'model.layers.1.mlp.experts.5.up_proj.weight'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expert 5's up_proj weight) is missing"), std::string::npos) << msg;
    if (shards > 1) {
      EXPECT_NE(msg.find("weight_map"), std::string::npos) << msg;
    }
  }
}

TEST(CheckpointErrors, WrongShapeForTheConfig) {
  Case c{"qwen3", base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kBF16), Style::kStandard,
         Layout::kPerExpert};
  auto w = write_edited(c, [](CkptBuilder&) {});
  MoeConfig other = c.config;
  other.intermediate_size = 64;
  std::string msg = load_error(*w, other);
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("experts.0.gate_proj.weight' (expert 0's gate_proj weight) has shape "
                     "[96, 64], expected [64, 64]"),
            std::string::npos)
      << msg;
  // The router tells a config with another expert count or hidden size.
  other = c.config;
  other.num_experts = 16;
  msg = load_error(*w, other);
  EXPECT_NE(msg.find("'model.layers.1.mlp.gate.weight' is [8, 64]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[num_experts = 16, hidden_size = 64]"), std::string::npos) << msg;
}

TEST(CheckpointErrors, ScaleShapeMismatch) {
  Case c{"deepseek", deepseek_config(QuantMode::kFP8Block, 192, 160), Style::kStandard,
         Layout::kPerExpert};
  const std::string name = "model.layers.1.mlp.experts.2.down_proj.weight_scale_inv";
  auto w = write_edited(c, [&](CkptBuilder& b) {
    b.erase(name);
    Tensor s = Tensor::empty({1, 2}, DType::kF32);  // [2, 2] expected for [192, 160]
    s.data_as<float>()[0] = s.data_as<float>()[1] = 1.0f;
    b.add(name, s);
  });
  const std::string msg = load_error(*w, c.config);
  EXPECT_NE(msg.find("'" + name + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has shape [1, 2], expected [2, 2] (128x128 blocks)"), std::string::npos)
      << msg;
}

TEST(CheckpointErrors, WrongDtypeAndMissingScale) {
  Case c{"deepseek", deepseek_config(QuantMode::kFP8Block, 192, 160), Style::kStandard,
         Layout::kPerExpert};
  auto w = write_edited(c, [](CkptBuilder& b) {
    b.erase("model.layers.1.mlp.experts.1.gate_proj.weight_scale_inv");
  });
  std::string msg = load_error(*w, c.config);
  EXPECT_NE(msg.find("'model.layers.1.mlp.experts.1.gate_proj.weight_scale_inv'"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("is missing"), std::string::npos) << msg;
  // The same fp8 checkpoint read as bf16.
  MoeConfig bf16 = c.config;
  bf16.quant = QuantMode::kBF16;
  msg = load_error(*w, bf16);
  EXPECT_NE(msg.find("has dtype F8_E4M3, but bf16 expects BF16 or F32"), std::string::npos) << msg;
}

TEST(CheckpointErrors, StackedShapeFitsNeitherOrientation) {
  Case c{"qwen3", base_config("qwen3_moe", 8, 2, 64, 96, QuantMode::kBF16), Style::kStandard,
         Layout::kStacked};
  auto w = write_edited(c, [](CkptBuilder& b) {
    b.erase("model.layers.1.mlp.experts.gate_up_proj");
    Tensor t = Tensor::empty({8, 100, 50}, DType::kBF16);
    fill_normal(t, 1);
    b.add("model.layers.1.mlp.experts.gate_up_proj", t);
  });
  const std::string msg = load_error(*w, c.config);
  EXPECT_NE(msg.find("'model.layers.1.mlp.experts.gate_up_proj' must be [E, 2I, H] or [E, H, 2I]"),
            std::string::npos)
      << msg;
}

TEST(CheckpointErrors, DeclaredQuantizationMustMatchTheTensors) {
  Case c{"deepseek", deepseek_config(QuantMode::kFP8Block, 192, 160), Style::kStandard,
         Layout::kPerExpert};
  auto w = write_edited(c, [](CkptBuilder&) {});
  auto ckpt = SafetensorsCheckpoint::open(w->dir.str());
  EXPECT_EQ(detect_quant_mode(*ckpt, kLayer, QuantMode::kFP8Block), QuantMode::kFP8Block);
  const std::string msg = error_of([&] { detect_quant_mode(*ckpt, kLayer, QuantMode::kNVFP4); });
  EXPECT_NE(msg.find("says nvfp4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stored as fp8_block"), std::string::npos) << msg;
  const std::string missing = error_of([&] { inspect_moe_layer(*ckpt, 7); });
  EXPECT_NE(missing.find("model.layers.7.mlp.gate.weight"), std::string::npos) << missing;
}

TEST(CheckpointErrors, MxWithW4A8Declared) {
  Case c{"gpt_oss", gpt_oss_config(QuantMode::kMXFP4), Style::kGptOss, Layout::kStacked};
  auto w = write_edited(c, [](CkptBuilder&) {});
  auto ckpt = SafetensorsCheckpoint::open(w->dir.str());
  EXPECT_EQ(detect_quant_mode(*ckpt, kLayer, QuantMode::kW4A8MXFP4MXFP8),
            QuantMode::kW4A8MXFP4MXFP8);
}

// ---- config.json + tensors -> the layer's MoeConfig ----------------------------------------

// A DeepSeek-V3-style FP8 checkpoint with its config.json (16 experts, shared expert, groups).
const Case kDeepSeekFp8{"deepseek", deepseek_config(QuantMode::kFP8Block, 192, 160),
                        Style::kStandard, Layout::kPerExpert};

std::unique_ptr<Written> write_deepseek_fp8_with_config() {
  auto w = write_edited(kDeepSeekFp8, [](CkptBuilder&) {});
  std::ofstream(w->dir.path / "config.json") << R"({
    "model_type": "deepseek_v3", "hidden_size": 192, "n_routed_experts": 16,
    "num_experts_per_tok": 4, "moe_intermediate_size": 160, "n_shared_experts": 1,
    "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5, "norm_topk_prob": true,
    "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}})";
  return w;
}

TEST(CheckpointConfig, ReadsConfigJsonAndDetectsTheQuantMode) {
  auto w = write_deepseek_fp8_with_config();
  const MoeConfig got = checkpoint_layer_config(w->dir.str(), kLayer);
  EXPECT_EQ(got.quant, QuantMode::kFP8Block);
  EXPECT_EQ(got.num_experts, 16);
  EXPECT_EQ(got.shared_intermediate_size, 160);
  auto src = CheckpointSource::open(w->dir.str(), got, kLayer);
  const Tensor x = random_input(got, 8, 2);
  const Tensor want = run_layer(kDeepSeekFp8.config, w->vanilla, LoadMode::kVanilla, x);
  EXPECT_LT(relative_l2(run_layer(got, *src, LoadMode::kVanilla, x), want), 1e-6);
}

// ---- The command: moe run --checkpoint --layer --input --output ------------------------------

#ifdef MOE_CLI_PATH
TEST(CheckpointCli, RunWritesTheLayersOutputForGivenActivations) {
  auto w = write_deepseek_fp8_with_config();
  const MoeConfig config = checkpoint_layer_config(w->dir.str(), kLayer);
  const Tensor x = random_input(config, 11, 5);
  const std::string in = (w->dir.path / "x_in.safetensors").string();
  const std::string out = (w->dir.path / "y_out.safetensors").string();
  write_safetensors(in, {st_write_tensor("x", x)});
  const std::string cmd = std::string(MOE_CLI_PATH) + " run --backend reference --repeat 1" +
                          " --checkpoint " + w->dir.str() + " --layer " + std::to_string(kLayer) +
                          " --input " + in + " --output " + out + " > " + w->dir.str() +
                          "/log.txt 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  auto file = SafetensorsFile::open(out);
  const StTensorInfo* y = file->find("y");
  ASSERT_NE(y, nullptr);
  ASSERT_EQ(y->shape, (std::vector<int64_t>{11, config.hidden_size}));
  ASSERT_NE(file->find("topk_ids"), nullptr);
  ASSERT_NE(file->find("topk_weights"), nullptr);
  Tensor got = Tensor::empty({11, config.hidden_size}, config.act_dtype);
  std::memcpy(got.data(), file->data(*y), y->nbytes());
  auto src = CheckpointSource::open(w->dir.str(), config, kLayer);
  const Tensor want = run_layer(config, *src, LoadMode::kVanilla, x);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.nbytes()), 0)
      << "moe run --checkpoint differs from the in-process layer";
}
#endif

// ---- Expert parallelism: a rank reads only its experts ---------------------------------------

class CountingSource final : public WeightSource {
 public:
  explicit CountingSource(WeightSource& inner) : inner_(inner) {}
  TensorView expert_tensor(int expert, Proj proj, Part part) override {
    ++requests[expert];
    return inner_.expert_tensor(expert, proj, part);
  }
  TensorView router_weight() override { return inner_.router_weight(); }
  TensorView router_bias() override { return inner_.router_bias(); }
  TensorView correction_bias() override { return inner_.correction_bias(); }
  std::string describe() const override { return "counting " + inner_.describe(); }
  std::map<int, int> requests;

 private:
  WeightSource& inner_;
};

TEST(CheckpointExpertParallel, RankLoadsOnlyItsExperts) {
  for (Layout layout : {Layout::kPerExpert, Layout::kStacked}) {
    Case c{"qwen3", deepseek_config(QuantMode::kBF16, 64, 96), Style::kStandard, layout};
    auto w = write_case(c);
    for (int rank = 0; rank < 2; ++rank) {
      const Mapping mapping{2, rank};
      auto src = CheckpointSource::open(w->dir.str(), c.config, kLayer);
      CountingSource counting(*src);
      ReferenceBackend backend(c.config, mapping);
      backend.create_weights();
      backend.load_weights(counting, src->natural_load_mode());
      std::set<int> want = {kSharedExpert};
      for (int e = rank * 8; e < rank * 8 + 8; ++e) want.insert(e);
      std::set<int> got;
      for (const auto& [e, n] : counting.requests) got.insert(e);
      EXPECT_EQ(got, want) << "rank " << rank << " layout " << static_cast<int>(layout);
      // Bytes handed out: only the local experts' share plus the shared MLP.
      const uint64_t expert_bytes = 3ull * 64 * 96 * 2;
      EXPECT_EQ(src->stats().bytes, 9 * expert_bytes);
    }
  }
}

}  // namespace
}  // namespace moe
