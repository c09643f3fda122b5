// CheckpointSource and the MoE-layer discovery of checkpoints (contract in checkpoint_source.h).
#include "weights/checkpoint_source.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "moe/errors.h"
#include "quant/formats.h"

namespace moe {
namespace {

// ---- Name maps (written once) -------------------------------------------------------------

struct FamilyNames {
  CheckpointFamily family;
  std::string_view name;
  std::string_view block;                // after "model.layers.L."
  std::string_view router;               // router weight [E, H], relative to the block
  std::string_view router_bias;          // "" when the family has none
  std::string_view correction_bias;      // ""
  std::string_view shared;               // shared-expert MLP prefix, "" when none
  std::array<std::string_view, 4> proj;  // by Proj: gate, up, down, gate_up ("" = none)
  bool interleaved;                      // stacked gate_up rows: even = gate, odd = up
  bool transposed;                       // default orientation of stacked weights: [E, in, out]
};

constexpr std::array<FamilyNames, 4> kFamilyNames = {{
    {CheckpointFamily::kMixtral,
     "mixtral",
     "block_sparse_moe.",
     "gate.weight",
     "",
     "",
     "",
     {"w1", "w3", "w2", ""},
     false,
     false},
    {CheckpointFamily::kStandard,
     "standard",
     "mlp.",
     "gate.weight",
     "",
     "gate.e_score_correction_bias",
     "shared_experts.",
     {"gate_proj", "up_proj", "down_proj", "gate_up_proj"},
     false,
     false},
    {CheckpointFamily::kGptOss,
     "gpt-oss",
     "mlp.",
     "router.weight",
     "router.bias",
     "",
     "",
     {"gate_proj", "up_proj", "down_proj", "gate_up_proj"},
     true,
     true},
    {CheckpointFamily::kLlama4,
     "llama4",
     "feed_forward.",
     "router.weight",
     "",
     "",
     "shared_expert.",
     {"gate_proj", "up_proj", "down_proj", "gate_up_proj"},
     false,
     true},
}};

// Where decoder layers live: text models, then the multimodal wrappers (Llama-4).
constexpr std::array<std::string_view, 3> kLayerPrefixes = {
    "model.layers.", "language_model.model.layers.", "model.language_model.layers."};

const FamilyNames& family_names(CheckpointFamily f) {
  for (const FamilyNames& n : kFamilyNames) {
    if (n.family == f) return n;
  }
  MOE_UNREACHABLE("checkpoint family ", static_cast<int>(f));
}

bool is_fp4(QuantMode q) {
  return q == QuantMode::kNVFP4 || q == QuantMode::kMXFP4 || q == QuantMode::kW4A8MXFP4MXFP8;
}
bool is_mx(QuantMode q) { return q == QuantMode::kMXFP4 || q == QuantMode::kW4A8MXFP4MXFP8; }
bool is_unquantized(QuantMode q) { return q == QuantMode::kBF16 || q == QuantMode::kFP16; }

// Suffix of a per-expert projection's part: "<proj>.<suffix>".
std::string_view part_suffix(QuantMode q, Part p) {
  if (p == Part::kScale && q == QuantMode::kFP8Block) return "weight_scale_inv";
  return part_name(p);  // weight, weight_scale, weight_scale_2, input_scale, bias
}

// Suffix of a stacked tensor's part: "experts.<proj><suffix>" (GPT-OSS, Llama-4, HF fused).
std::string_view stacked_suffix(QuantMode q, Part p) {
  switch (p) {
    case Part::kWeight:
      return is_mx(q) ? "_blocks" : "";
    case Part::kScale:
      return "_scales";
    case Part::kBias:
      return "_bias";
    default:
      return "";
  }
}

// Whether mode `q` stores part `p` at all.
bool mode_has_part(QuantMode q, Part p) {
  switch (p) {
    case Part::kWeight:
    case Part::kBias:
      return true;
    case Part::kScale:
      return !is_unquantized(q);
    case Part::kGlobalScale:
      return q == QuantMode::kNVFP4;
    case Part::kInputScale:
      return q == QuantMode::kNVFP4 || q == QuantMode::kFP8PerTensor;
  }
  return false;
}

// How a part's tensor relates to its projection W [rows, cols].
struct PartGeometry {
  int64_t row_unit;  // weight rows per part row; 0: per-tensor values
  int64_t col_div;   // part row elements = ceil(cols / col_div); 0: one element (bias)
  bool packed;       // the file holds U8 [rows, cols / 2] (two e2m1 per byte)
};

PartGeometry part_geometry(QuantMode q, Part p) {
  switch (p) {
    case Part::kWeight:
      return {1, 1, is_fp4(q)};
    case Part::kScale:
      if (q == QuantMode::kFP8Block) return {128, 128, false};
      if (q == QuantMode::kFP8PerTensor) return {0, 0, false};
      if (q == QuantMode::kNVFP4) return {1, 16, false};
      return {1, 32, false};  // mxfp4, w4a8
    case Part::kBias:
      return {1, 0, false};
    default:
      return {0, 0, false};  // global and input scales
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The file dtypes a part accepts in mode q, and the dtype each is served as.
struct Accepted {
  std::string_view file;
  DType served;
};

std::vector<Accepted> accepted_dtypes(QuantMode q, Part p) {
  switch (p) {
    case Part::kWeight:
      if (q == QuantMode::kBF16) return {{"BF16", DType::kBF16}, {"F32", DType::kBF16}};
      if (q == QuantMode::kFP16) return {{"F16", DType::kF16}, {"F32", DType::kF16}};
      if (is_fp4(q)) return {{"U8", DType::kE2M1}};
      return {{"F8_E4M3", DType::kE4M3}};
    case Part::kScale:
      if (q == QuantMode::kFP8Block) return {{"F32", DType::kF32}, {"BF16", DType::kF32}};
      if (q == QuantMode::kFP8PerTensor) return {{"F32", DType::kF32}};
      if (q == QuantMode::kNVFP4) return {{"F8_E4M3", DType::kE4M3Scale}};
      return {{"U8", DType::kUE8M0}, {"F8_E8M0", DType::kUE8M0}};
    case Part::kBias:
      return {{"F32", DType::kF32}, {"BF16", DType::kBF16}, {"F16", DType::kF32}};
    default:
      return {{"F32", DType::kF32}, {"BF16", DType::kF32}};
  }
}

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  return buf;
}

// ---- Element conversions (rare: f32 checkpoints, bf16 biases) ------------------------------

float load_float(const uint8_t* p, std::string_view dtype) {
  if (dtype == "F32") {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return dtype == "BF16" ? fmt::bf16_to_float(bits) : fmt::f16_to_float(bits);
}

// src (file dtype) -> dst (served dtype), n elements.
void convert(const uint8_t* src, std::string_view from, uint8_t* dst, DType to, int64_t n) {
  const int in_bytes = from == "F32" ? 4 : 2;
  for (int64_t i = 0; i < n; ++i) {
    const float v = load_float(src + i * in_bytes, from);
    if (to == DType::kF32) {
      std::memcpy(dst + 4 * i, &v, 4);
    } else {
      const uint16_t bits = to == DType::kBF16 ? fmt::float_to_bf16(v) : fmt::float_to_f16(v);
      std::memcpy(dst + 2 * i, &bits, 2);
    }
  }
}

bool needs_conversion(std::string_view file, DType served) {
  return !((file == "F32" && served == DType::kF32) || (file == "BF16" && served == DType::kBF16) ||
           (file == "F16" && served == DType::kF16) || file == "U8" || file == "F8_E4M3" ||
           file == "F8_E8M0");
}

// Blocked transpose of selected columns: out[i][j] = src[j * ld + col(i)], col(i) = start +
// i * step, for i < count, j < inner. Tiles keep both sides in cache.
template <int kBytes>
void gather_columns(const uint8_t* src, int64_t ld, int64_t inner, int64_t start, int64_t step,
                    int64_t count, uint8_t* out) {
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < count; i0 += kTile) {
    const int64_t i1 = std::min(count, i0 + kTile);
    for (int64_t j0 = 0; j0 < inner; j0 += kTile) {
      const int64_t j1 = std::min(inner, j0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        const uint8_t* col = src + (start + i * step) * kBytes;
        uint8_t* row = out + i * inner * kBytes;
        for (int64_t j = j0; j < j1; ++j)
          std::memcpy(row + j * kBytes, col + j * ld * kBytes, kBytes);
      }
    }
  }
}

// ---- Layer discovery ----------------------------------------------------------------------

struct Located {
  const FamilyNames* names = nullptr;
  std::string prefix;  // "model.layers.L.mlp."
};

std::optional<Located> locate(const SafetensorsCheckpoint& c, int layer) {
  for (std::string_view p : kLayerPrefixes) {
    for (const FamilyNames& f : kFamilyNames) {
      std::string prefix = std::string(p) + std::to_string(layer) + "." + std::string(f.block);
      if (c.contains(prefix + std::string(f.router))) return Located{&f, std::move(prefix)};
    }
  }
  return std::nullopt;
}

// QuantMode of a per-expert weight `base` + ".weight" from its dtype and siblings.
QuantMode quant_of_weight(SafetensorsCheckpoint& c, const std::string& base) {
  const auto w = c.get(base + ".weight");
  const std::string_view dtype = w.info->dtype->name;
  if (dtype == "BF16" || dtype == "F32") return QuantMode::kBF16;
  if (dtype == "F16") return QuantMode::kFP16;
  if (dtype == "F8_E4M3") {
    if (c.contains(base + ".weight_scale_inv")) return QuantMode::kFP8Block;
    if (c.contains(base + ".weight_scale")) return QuantMode::kFP8PerTensor;
    MOE_THROW(w.file->path(), ": tensor '", base, ".weight' is F8_E4M3 but has neither a ",
              "weight_scale_inv (fp8_block) nor a weight_scale (fp8_per_tensor) sibling");
  }
  if (dtype == "U8") {
    if (c.contains(base + ".weight_scale_2")) return QuantMode::kNVFP4;
    if (c.contains(base + ".weight_scale")) return QuantMode::kMXFP4;
    MOE_THROW(w.file->path(), ": tensor '", base, ".weight' is U8 (packed fp4) but has neither ",
              "a weight_scale_2 (nvfp4) nor a weight_scale (mxfp4) sibling");
  }
  MOE_THROW(w.file->path(), ": tensor '", base, ".weight' has dtype ", dtype,
            ", which no supported weight format uses (BF16, F16, F32, F8_E4M3, U8)");
}

// Number of the expert in "experts.<e>.<rest>" (the part after `experts_prefix`), or -1.
int expert_index(std::string_view name, std::string_view experts_prefix) {
  std::string_view rest = name.substr(experts_prefix.size());
  const size_t dot = rest.find('.');
  if (dot == 0 || dot == std::string_view::npos) return -1;
  int e = 0;
  for (char ch : rest.substr(0, dot)) {
    if (ch < '0' || ch > '9' || e > 100000000) return -1;
    e = e * 10 + (ch - '0');
  }
  return e;
}

}  // namespace

std::string_view checkpoint_family_name(CheckpointFamily f) { return family_names(f).name; }

std::string_view expert_layout_name(ExpertLayout l) {
  switch (l) {
    case ExpertLayout::kPerExpert:
      return "per-expert";
    case ExpertLayout::kPerExpertFused:
      return "per-expert fused gate_up";
    case ExpertLayout::kStacked:
      return "stacked fused gate_up";
  }
  MOE_UNREACHABLE("expert layout ", static_cast<int>(l));
}

LoadMode MoeLayerInfo::load_mode() const {
  return layout == ExpertLayout::kPerExpert ? LoadMode::kVanilla : LoadMode::kFusedGateUpProj;
}

MoeLayerInfo inspect_moe_layer(SafetensorsCheckpoint& c, int layer) {
  const std::optional<Located> loc = locate(c, layer);
  if (!loc) {
    std::string looked;
    for (const FamilyNames& f : kFamilyNames) {
      looked += (looked.empty() ? "" : ", ") + std::string(kLayerPrefixes[0]) +
                std::to_string(layer) + "." + std::string(f.block) + std::string(f.router);
    }
    MOE_THROW(c.describe(), ": layer ", layer, " has no MoE router (looked for ", looked,
              ", also under language_model.): a dense layer, or no such layer");
  }
  const FamilyNames& f = *loc->names;
  MoeLayerInfo info;
  info.layer = layer;
  info.prefix = loc->prefix;
  info.family = f.family;

  const std::string router = info.prefix + std::string(f.router);
  const auto r = c.get(router);
  MOE_CHECK(r.info->shape.size() == 2, r.file->path(), ": tensor '", router,
            "': the router weight must be [num_experts, hidden_size], got ", r.info->str());
  info.num_experts = static_cast<int>(r.info->shape[0]);
  info.hidden_size = r.info->shape[1];
  const int64_t h = info.hidden_size;
  info.has_router_bias =
      !f.router_bias.empty() && c.contains(info.prefix + std::string(f.router_bias));
  info.has_correction_bias =
      !f.correction_bias.empty() && c.contains(info.prefix + std::string(f.correction_bias));

  const std::string experts = info.prefix + "experts.";
  if (c.contains(experts + "gate_up_proj_blocks") || c.contains(experts + "gate_up_proj")) {
    info.layout = ExpertLayout::kStacked;
    info.interleaved = f.interleaved;
    if (c.contains(experts + "gate_up_proj_blocks")) {
      const auto w = c.get(experts + "gate_up_proj_blocks");  // [E, 2I, H/32, 16]
      MOE_CHECK(w.info->shape.size() == 4, w.file->path(), ": tensor '", w.info->name,
                "' must be [E, 2I, H/32, 16], got ", w.info->str());
      info.quant = QuantMode::kMXFP4;
      info.weight_dtype = w.info->dtype->name;
      info.intermediate_size = w.info->shape[1] / 2;
    } else {
      const auto w = c.get(experts + "gate_up_proj");  // [E, 2I, H] or [E, H, 2I]
      const auto& s = w.info->shape;
      MOE_CHECK(s.size() == 3 && (s[1] == h || s[2] == h), w.file->path(), ": tensor '",
                w.info->name, "' must be [E, 2I, H] or [E, H, 2I] with H = ", h,
                " (the router's), got ", w.info->str());
      const std::string_view dtype = w.info->dtype->name;
      MOE_CHECK(dtype == "BF16" || dtype == "F16" || dtype == "F32", w.file->path(), ": tensor '",
                w.info->name, "' has dtype ", dtype,
                "; stacked expert tensors are read in BF16, F16 or F32 (or GPT-OSS MXFP4 "
                "_blocks/_scales)");
      info.quant = dtype == "F16" ? QuantMode::kFP16 : QuantMode::kBF16;
      info.weight_dtype = dtype;
      info.transposed = s[1] == h && s[2] == h ? f.transposed : s[1] == h;
      info.intermediate_size = (info.transposed ? s[2] : s[1]) / 2;
    }
    info.has_expert_biases = c.contains(experts + "gate_up_proj_bias");
  } else {
    std::set<int> found;
    for (const std::string& n : c.names_with_prefix(experts)) {
      const int e = expert_index(n, experts);
      if (e >= 0) found.insert(e);
    }
    MOE_CHECK(!found.empty(), c.describe(), ": layer ", layer, " has a router (", router,
              ") but no expert tensors under ", experts);
    info.num_expert_tensors_found = static_cast<int>(found.size());
    const std::string first = experts + std::to_string(*found.begin()) + ".";
    const bool fused = !f.proj[3].empty() && c.contains(first + std::string(f.proj[3]) + ".weight");
    info.layout = fused ? ExpertLayout::kPerExpertFused : ExpertLayout::kPerExpert;
    const std::string base = first + std::string(fused ? f.proj[3] : f.proj[0]);
    info.quant = quant_of_weight(c, base);
    const auto w = c.get(base + ".weight");
    info.weight_dtype = w.info->dtype->name;
    MOE_CHECK(!w.info->shape.empty(), w.file->path(), ": tensor '", w.info->name,
              "' must be [out, in], got ", w.info->str());
    info.intermediate_size = w.info->shape[0] / (fused ? 2 : 1);
    info.has_expert_biases = c.contains(base + ".bias");
  }

  if (!f.shared.empty()) {
    const std::string shared = info.prefix + std::string(f.shared);
    for (int fused = 1; fused >= 0; --fused) {
      const std::string name = shared + std::string(f.proj[fused ? 3 : 0]) + ".weight";
      if (!c.contains(name)) continue;
      const auto w = c.get(name);
      MOE_CHECK(!w.info->shape.empty(), w.file->path(), ": tensor '", name,
                "' must be [out, in], got ", w.info->str());
      info.shared_intermediate_size = w.info->shape[0] / (fused ? 2 : 1);
      break;
    }
  }

  for (const std::string& n : c.names_with_prefix(info.prefix)) {
    const auto e = c.get(n);
    info.bytes += e.info->nbytes();
    ++info.num_tensors;
  }
  return info;
}

std::vector<MoeLayerInfo> list_moe_layers(SafetensorsCheckpoint& c) {
  std::set<int> layers;
  for (const std::string& n : c.names()) {
    for (std::string_view p : kLayerPrefixes) {
      if (!std::string_view(n).starts_with(p)) continue;
      const int layer = expert_index(n, p);  // "<digits>." after the prefix
      if (layer >= 0) layers.insert(layer);
    }
  }
  std::vector<MoeLayerInfo> out;
  for (int layer : layers) {
    if (locate(c, layer)) out.push_back(inspect_moe_layer(c, layer));
  }
  return out;
}

QuantMode detect_quant_mode(SafetensorsCheckpoint& c, int layer,
                            std::optional<QuantMode> declared) {
  const MoeLayerInfo info = inspect_moe_layer(c, layer);
  if (!declared || *declared == info.quant || is_unquantized(info.quant)) return info.quant;
  if (*declared == QuantMode::kW4A8MXFP4MXFP8 && info.quant == QuantMode::kMXFP4) return *declared;
  MOE_THROW(c.describe(), ": config.json's quantization_config says ", quant_mode_name(*declared),
            ", but the expert tensors of layer ", layer, " (", info.prefix, "experts.*, ",
            info.weight_dtype, ") are stored as ", quant_mode_name(info.quant));
}

MoeConfig checkpoint_layer_config(const std::string& dir, int layer) {
  namespace fs = std::filesystem;
  const fs::path json = fs::path(dir) / "config.json";
  MoeConfig config = config_from_hf_json_file(json.string());
  // Whether config.json declares a quantization (the parser maps its absence to bf16/fp16).
  std::ifstream in(json, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  const nlohmann::json root = nlohmann::json::parse(text.str(), nullptr, false);
  bool declared = root.is_object() && root.contains("quantization_config");
  if (root.is_object() && root.contains("text_config") && root["text_config"].is_object()) {
    declared = declared || root["text_config"].contains("quantization_config");
  }
  auto ckpt = SafetensorsCheckpoint::open(dir);
  config.quant = detect_quant_mode(
      *ckpt, layer, declared ? std::optional<QuantMode>(config.quant) : std::nullopt);
  config.validate();
  return config;
}

std::string LoadStats::str() const {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s (%lld tensors) in %.2f s: %.2f GB/s",
                gb(static_cast<double>(bytes)).c_str(), static_cast<long long>(tensors), seconds,
                bytes_per_second() / 1e9);
  return buf;
}

// ---- CheckpointSource -----------------------------------------------------------------------

// One checkpoint tensor restricted to one expert, as a matrix of part rows.
struct CheckpointSource::Slice {
  std::string name;
  const SafetensorsFile* file = nullptr;
  const StTensorInfo* info = nullptr;
  const uint8_t* data = nullptr;  // the expert's bytes
  int64_t rows = 0;               // part rows
  int64_t row_bytes = 0;          // bytes per part row (not transposed)
  bool transposed = false;        // the file holds [inner, rows]: a part row is a column
  int64_t inner = 0;              // transposed: elements per part row
  int elem_bytes = 0;             // transposed: bytes per element
  DType served = DType::kU8;
};

// Part rows start + i * step (i < count) of a slice, appended to the output in order.
struct CheckpointSource::Run {
  Slice slice;
  int64_t start = 0;
  int64_t step = 1;
  int64_t count = 0;
};

CheckpointSource::CheckpointSource(std::shared_ptr<SafetensorsCheckpoint> ckpt,
                                   const MoeConfig& config, int layer)
    : ckpt_(std::move(ckpt)), config_(config) {
  info_ = inspect_moe_layer(*ckpt_, layer);
  const FamilyNames& f = family_names(info_.family);
  const std::string where = ckpt_->describe() + ", layer " + std::to_string(layer);
  const std::string router = info_.prefix + std::string(f.router);
  MOE_CHECK(info_.num_experts == config_.num_experts && info_.hidden_size == config_.hidden_size,
            where, ": tensor '", router, "' is [", info_.num_experts, ", ", info_.hidden_size,
            "], but the config expects [num_experts = ", config_.num_experts,
            ", hidden_size = ", config_.hidden_size, "]");
  if (info_.layout == ExpertLayout::kStacked) {
    const bool ok = is_unquantized(config_.quant) || is_mx(config_.quant);
    MOE_CHECK(ok, where, ": stacked expert tensors (", info_.prefix,
              "experts.gate_up_proj...) are read in bf16, fp16 or mxfp4, not in ",
              quant_mode_name(config_.quant));
  }
  MOE_CHECK(!is_fp4(config_.quant) ||
                (config_.hidden_size % 32 == 0 && config_.intermediate_size % 32 == 0),
            where, ": packed fp4 weights need hidden_size and intermediate_size divisible by 32");
  if (info_.shared_intermediate_size > 0) {
    MOE_CHECK(config_.shared_intermediate_size == info_.shared_intermediate_size, where,
              ": the checkpoint's shared-expert MLP (", info_.prefix, f.shared,
              "*) has intermediate size ", info_.shared_intermediate_size,
              ", but the config has shared_intermediate_size = ", config_.shared_intermediate_size);
    shared_fused_ =
        ckpt_->contains(info_.prefix + std::string(f.shared) + std::string(f.proj[3]) + ".weight");
  }
}

std::unique_ptr<CheckpointSource> CheckpointSource::open(const std::string& path,
                                                         const MoeConfig& config, int layer) {
  return std::make_unique<CheckpointSource>(SafetensorsCheckpoint::open(path), config, layer);
}

CheckpointSource::~CheckpointSource() { finish_progress(); }

std::string CheckpointSource::describe() const {
  return "layer " + std::to_string(info_.layer) + " of " + ckpt_->describe() + " (" +
         std::string(checkpoint_family_name(info_.family)) + " names, " +
         std::string(expert_layout_name(info_.layout)) + ", " +
         std::string(quant_mode_name(config_.quant)) + ")";
}

TensorView CheckpointSource::expert_tensor(int expert, Proj proj, Part part) {
  if (!first_request_) first_request_ = std::chrono::steady_clock::now();
  const bool shared = expert == kSharedExpert;
  MOE_CHECK(shared || (expert >= 0 && expert < config_.num_experts), describe(), ": expert ",
            expert, " out of range [0, ", config_.num_experts, ")");
  const QuantMode q = config_.quant;
  if (!mode_has_part(q, part)) return {};
  if (shared && config_.num_shared_experts == 0) return {};
  if (part == Part::kBias && !config_.has_expert_biases) return {};
  const bool required = part == Part::kWeight || part == Part::kScale ||
                        part == Part::kGlobalScale || (part == Part::kBias && !shared);

  const FamilyNames& f = family_names(info_.family);
  const int64_t h = config_.hidden_size;
  const int64_t inter = shared ? config_.shared_intermediate_size : config_.intermediate_size;
  const ExpertLayout layout =
      shared ? (shared_fused_ ? ExpertLayout::kPerExpertFused : ExpertLayout::kPerExpert)
             : info_.layout;
  const PartGeometry geo = part_geometry(q, part);
  const std::string what = (shared ? std::string("the shared-expert MLP's ")
                                   : "expert " + std::to_string(expert) + "'s ") +
                           std::string(proj_name(proj)) + " " + std::string(part_name(part));

  // Opens the tensor of projection `p` (rows weight rows, cols columns); nullopt when an
  // optional part is absent.
  auto open = [&](Proj p, int64_t rows, int64_t cols) -> std::optional<Slice> {
    const bool stacked = layout == ExpertLayout::kStacked;
    std::string name;
    if (stacked) {
      name = info_.prefix + "experts." + std::string(proj_name(p)) +
             std::string(stacked_suffix(q, part));
    } else {
      MOE_CHECK(!f.proj[static_cast<int>(p)].empty(), describe(), ": ", f.name,
                " checkpoints have no name for ", proj_name(p));
      name = info_.prefix +
             (shared ? std::string(f.shared) : "experts." + std::to_string(expert) + ".") +
             std::string(f.proj[static_cast<int>(p)]) + "." + std::string(part_suffix(q, part));
    }
    const auto entry = ckpt_->find(name);
    if (!entry) {
      MOE_CHECK(!required, describe(), ": tensor '", name, "' (", what, ") is missing",
                ckpt_->sharded() ? " from the weight_map of " + std::string(kSafetensorsIndexName)
                                 : std::string());
      return std::nullopt;
    }
    const StTensorInfo& t = *entry->info;
    const std::string file = entry->file->path();
    Slice s;
    s.name = name;
    s.file = entry->file;
    s.info = &t;
    const std::vector<Accepted> ok = accepted_dtypes(q, part);
    auto it = std::find_if(ok.begin(), ok.end(),
                           [&](const Accepted& a) { return a.file == t.dtype->name; });
    if (it == ok.end()) {
      std::string names;
      for (const Accepted& a : ok) names += (names.empty() ? "" : " or ") + std::string(a.file);
      MOE_THROW(file, ": tensor '", name, "' (", what, ") has dtype ", t.dtype->name, ", but ",
                quant_mode_name(q), " expects ", names);
    }
    s.served = it->served;

    // The expected shape of one expert's tensor, and the number of part rows it holds.
    std::vector<int64_t> expect;
    bool transposed = false;
    if (geo.row_unit == 0) {  // per-tensor values: [] or [1]; a fused tensor may hold [2]
      s.rows = t.numel();
      const bool fused_pair = p == Proj::kGateUp && s.rows == 2 && t.shape.size() == 1;
      const bool scalar = s.rows == 1 && t.shape.size() <= 1;
      MOE_CHECK(!stacked && (scalar || fused_pair), file, ": tensor '", name, "' (", what,
                ") must be a scalar ([] or [1]", p == Proj::kGateUp ? ", or [2] = (gate, up)" : "",
                "), got ", t.str());
      expect = t.shape;
    } else {
      s.rows = ceil_div(rows, geo.row_unit);
      if (part == Part::kWeight && geo.packed && stacked) {
        expect = {s.rows, cols / 32, 16};  // GPT-OSS _blocks
      } else if (part == Part::kWeight && geo.packed) {
        expect = {s.rows, cols / 2};
      } else if (geo.col_div == 0) {
        expect = {s.rows};
      } else if (part == Part::kWeight && stacked && info_.transposed) {
        transposed = true;
        expect = {cols, s.rows};
      } else {
        expect = {s.rows, ceil_div(cols, geo.col_div)};
      }
      if (stacked) expect.insert(expect.begin(), config_.num_experts);
      if (t.shape != expect) {
        std::string hint;
        if (part == Part::kScale && (q == QuantMode::kFP8Block)) hint = " (128x128 blocks)";
        MOE_THROW(file, ": tensor '", name, "' (", what, ") has shape ", shape_str(t.shape),
                  ", expected ", shape_str(expect), hint,
                  " for num_experts = ", config_.num_experts, ", hidden_size = ", h,
                  ", intermediate_size = ", inter, ", ", quant_mode_name(q));
      }
    }
    const uint64_t slice_bytes = stacked ? t.nbytes() / config_.num_experts : t.nbytes();
    s.data = entry->data() + (stacked ? slice_bytes * expert : 0);
    s.row_bytes = s.rows > 0 ? static_cast<int64_t>(slice_bytes) / s.rows : 0;
    if (transposed) {
      s.transposed = true;
      s.inner = cols;
      s.elem_bytes = t.dtype->bits / 8;
    }
    return s;
  };

  std::vector<Run> runs;
  auto whole = [&](std::optional<Slice> s) {
    if (s) runs.push_back(Run{*s, 0, 1, s->rows});
  };
  if (proj == Proj::kDown) {
    whole(open(Proj::kDown, h, inter));
  } else if (layout == ExpertLayout::kPerExpert) {
    if (proj == Proj::kGateUp) {
      whole(open(Proj::kGate, inter, h));
      whole(open(Proj::kUp, inter, h));
      MOE_CHECK(runs.size() != 1, describe(), ": ", what, ": the checkpoint has only one of the ",
                "gate and up parts");
    } else {
      whole(open(proj, inter, h));
    }
  } else {  // fused: split or take the gate_up tensor
    std::optional<Slice> s = open(Proj::kGateUp, 2 * inter, h);
    if (s) {
      const bool per_tensor = geo.row_unit == 0;
      const int64_t half = per_tensor ? 1 : ceil_div(inter, geo.row_unit);
      if (!per_tensor && geo.row_unit > 1) {
        MOE_CHECK(inter % geo.row_unit == 0, s->file->path(), ": tensor '", s->name, "' (", what,
                  "): intermediate size ", inter, " is not a multiple of the ", geo.row_unit,
                  "-row scale blocks, so the fused gate/up scales cannot be split");
      }
      if (per_tensor) {
        if (proj == Proj::kGateUp)
          runs.push_back(Run{*s, 0, 1, s->rows});
        else
          runs.push_back(Run{*s, proj == Proj::kUp && s->rows == 2 ? 1 : 0, 1, 1});
      } else if (info_.interleaved && layout == ExpertLayout::kStacked) {
        if (proj != Proj::kUp) runs.push_back(Run{*s, 0, 2, half});
        if (proj != Proj::kGate) runs.push_back(Run{*s, 1, 2, half});
      } else {
        if (proj == Proj::kGateUp)
          runs.push_back(Run{*s, 0, 1, 2 * half});
        else
          runs.push_back(Run{*s, proj == Proj::kUp ? half : 0, 1, half});
      }
    }
  }
  if (runs.empty()) return {};

  int64_t total = 0;
  for (const Run& r : runs) total += r.count;
  std::vector<int64_t> shape;
  if (geo.row_unit == 0 || geo.col_div == 0) {
    shape = {total};
  } else {
    const int64_t c = proj == Proj::kDown ? inter : h;
    shape = {total, ceil_div(c, geo.col_div)};
  }
  TensorView v = serve(runs, runs[0].slice.served, std::move(shape));
  account(v);
  return v;
}

TensorView CheckpointSource::serve(const std::vector<Run>& runs, DType served,
                                   std::vector<int64_t> shape) {
  const Slice& first = runs[0].slice;
  const std::string_view file_dtype = first.info->dtype->name;
  const bool conversion = needs_conversion(file_dtype, served);
  const int align = first.transposed ? first.elem_bytes : std::max(1, first.info->dtype->bits / 8);

  // No transform: the view points into the mapping.
  const Run& r0 = runs[0];
  const uint8_t* start = r0.slice.data + r0.start * r0.slice.row_bytes;
  if (runs.size() == 1 && !r0.slice.transposed && (r0.step == 1 || r0.count == 1) && !conversion &&
      reinterpret_cast<uintptr_t>(start) % align == 0) {
    r0.slice.file->prefetch(start, r0.count * r0.slice.row_bytes);
    return TensorView(const_cast<uint8_t*>(start), served, shape);
  }

  // Gather the runs (in the file's dtype) into the buffer, one memcpy per contiguous run.
  int64_t bytes = 0;
  for (const Run& r : runs) {
    bytes += r.slice.transposed ? r.count * r.slice.inner * r.slice.elem_bytes
                                : r.count * r.slice.row_bytes;
  }
  if (!buffer_.defined() || buffer_.nbytes() < static_cast<size_t>(bytes)) {
    buffer_ = Tensor::empty({std::max<int64_t>(bytes, 64)}, DType::kU8);
  }
  uint8_t* out = buffer_.data_as<uint8_t>();
  for (const Run& r : runs) {
    const Slice& s = r.slice;
    s.file->prefetch(s.data, s.transposed ? s.rows * s.inner * s.elem_bytes : s.rows * s.row_bytes);
    if (s.transposed) {
      switch (s.elem_bytes) {
        case 2:
          gather_columns<2>(s.data, s.rows, s.inner, r.start, r.step, r.count, out);
          break;
        case 4:
          gather_columns<4>(s.data, s.rows, s.inner, r.start, r.step, r.count, out);
          break;
        default:
          MOE_THROW(s.file->path(), ": tensor '", s.name, "': cannot transpose ",
                    s.info->dtype->name, " elements");
      }
      out += r.count * s.inner * s.elem_bytes;
    } else if (r.step == 1) {
      std::memcpy(out, s.data + r.start * s.row_bytes, r.count * s.row_bytes);
      out += r.count * s.row_bytes;
    } else {  // interleaved rows (GPT-OSS): one memcpy per row
      for (int64_t i = 0; i < r.count; ++i) {
        std::memcpy(out, s.data + (r.start + i * r.step) * s.row_bytes, s.row_bytes);
        out += s.row_bytes;
      }
    }
  }
  if (!conversion) return TensorView(buffer_.data(), served, shape);

  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const size_t out_bytes = dtype_bytes(served, numel);
  if (!convert_.defined() || convert_.nbytes() < out_bytes) {
    convert_ = Tensor::empty({static_cast<int64_t>(std::max<size_t>(out_bytes, 64))}, DType::kU8);
  }
  convert(buffer_.data_as<uint8_t>(), file_dtype, convert_.data_as<uint8_t>(), served, numel);
  return TensorView(convert_.data(), served, shape);
}

TensorView CheckpointSource::vector_tensor(const std::string& name, const char* what, bool as_f32) {
  if (!first_request_) first_request_ = std::chrono::steady_clock::now();
  const auto e = ckpt_->get(name);
  const StTensorInfo& t = *e.info;
  const std::string_view dtype = t.dtype->name;
  MOE_CHECK(dtype == "F32" || dtype == "BF16" || dtype == "F16", e.file->path(), ": tensor '", name,
            "' (", what, ") has dtype ", dtype, ", expected F32, BF16 or F16");
  const bool matrix = !as_f32;  // the router weight [E, H]; biases [E]
  const std::vector<int64_t> expect =
      matrix ? std::vector<int64_t>{config_.num_experts, config_.hidden_size}
             : std::vector<int64_t>{config_.num_experts};
  MOE_CHECK(t.shape == expect, e.file->path(), ": tensor '", name, "' (", what, ") has shape ",
            shape_str(t.shape), ", expected ", shape_str(expect));
  const DType served = (as_f32 || dtype != "BF16") ? DType::kF32 : DType::kBF16;
  Slice s;
  s.name = name;
  s.file = e.file;
  s.info = &t;
  s.data = e.data();
  s.rows = expect[0];
  s.row_bytes = static_cast<int64_t>(t.nbytes()) / s.rows;
  s.served = served;
  TensorView v = serve({Run{s, 0, 1, s.rows}}, served, expect);
  account(v);
  return v;
}

TensorView CheckpointSource::router_weight() {
  return vector_tensor(info_.prefix + std::string(family_names(info_.family).router),
                       "router weight", false);
}

TensorView CheckpointSource::router_bias() {
  const FamilyNames& f = family_names(info_.family);
  const std::string name = info_.prefix + std::string(f.router_bias);
  if (f.router_bias.empty() || !ckpt_->contains(name)) {
    MOE_CHECK(!config_.has_router_bias, describe(), ": the config has a router bias, but ",
              f.router_bias.empty() ? std::string(f.name) + " checkpoints have none"
                                    : "tensor '" + name + "' is missing");
    return {};
  }
  return vector_tensor(name, "router bias", true);
}

TensorView CheckpointSource::correction_bias() {
  const FamilyNames& f = family_names(info_.family);
  const std::string name = info_.prefix + std::string(f.correction_bias);
  if (f.correction_bias.empty() || !ckpt_->contains(name)) {
    MOE_CHECK(!(config_.routing.method == RoutingMethod::kDeepSeekV3 &&
                config_.routing.has_correction_bias),
              describe(), ": the config's routing uses e_score_correction_bias, but ",
              f.correction_bias.empty() ? std::string(f.name) + " checkpoints have none"
                                        : "tensor '" + name + "' is missing");
    return {};
  }
  return vector_tensor(name, "e_score_correction_bias", true);
}

// ---- Progress ---------------------------------------------------------------------------

void CheckpointSource::enable_progress(uint64_t expected_bytes) {
  progress_ = ::isatty(STDERR_FILENO) != 0;
  progress_total_ = expected_bytes > 0 ? expected_bytes : info_.bytes;
}

void CheckpointSource::account(const TensorView& t) {
  stats_.bytes += t.nbytes();
  ++stats_.tensors;
  const auto now = std::chrono::steady_clock::now();
  stats_.seconds = std::chrono::duration<double>(now - *first_request_).count();
  if (!progress_ || now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  progress_drawn_ = true;
  const double frac =
      progress_total_ > 0 ? std::min(1.0, static_cast<double>(stats_.bytes) / progress_total_) : 0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  std::fprintf(stderr, "\rloading layer %d [%s%s] %3d%%  %s / %s  %.2f GB/s ", info_.layer,
               std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
               static_cast<int>(frac * 100), gb(static_cast<double>(stats_.bytes)).c_str(),
               gb(static_cast<double>(progress_total_)).c_str(), stats_.bytes_per_second() / 1e9);
  std::fflush(stderr);
}

void CheckpointSource::finish_progress() {
  if (progress_drawn_) std::fprintf(stderr, "\n");
  progress_drawn_ = false;
  progress_ = false;
}

LoadStats CheckpointSource::stats() const { return stats_; }

}  // namespace moe
