// `moe inspect DIR`: the MoE layers of a safetensors checkpoint (file, sharded directory or
// directory of files): per layer the family of tensor names, the layout (per-expert, fused,
// stacked), the quant mode read from the tensors, experts, shapes and bytes; consecutive
// layers stored alike are printed as one range. With config.json in DIR, the layer it
// describes is printed too.
//   --layer N     also list layer N's tensors (router, expert 0, shared MLP; the other
//                 experts are counted) with dtype, shape, bytes and file
//   --verify      read every tensor of the layer(s) through the loader, checking dtypes and
//                 shapes against config.json (or the shapes found), and print the bytes/s
//   --json        the layer table as JSON
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "moe/commands.h"
#include "moe/moe.h"
#include "weights/checkpoint_source.h"
#include "weights/safetensors.h"

namespace moe::cli {
namespace {

namespace fs = std::filesystem;

struct InspectOptions {
  std::string path;
  std::optional<int> layer;
  bool verify = false;
  bool json = false;
};

std::string human_bytes(uint64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (b >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else if (b >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f MB", b / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  return buf;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Everything of a layer but its index: layers with equal keys are printed as one range.
std::string format_key(const MoeLayerInfo& l) {
  return std::string(checkpoint_family_name(l.family)) + "|" +
         std::string(expert_layout_name(l.layout)) + "|" + std::string(quant_mode_name(l.quant)) +
         "|" + std::to_string(l.num_experts) + "|" + std::to_string(l.hidden_size) + "|" +
         std::to_string(l.intermediate_size) + "|" + std::to_string(l.shared_intermediate_size) +
         "|" + std::to_string(l.has_router_bias) + std::to_string(l.has_correction_bias) +
         std::to_string(l.has_expert_biases) + std::to_string(l.transposed) +
         std::to_string(l.interleaved) + "|" + std::to_string(l.bytes) + "|" + l.weight_dtype;
}

std::string extras(const MoeLayerInfo& l) {
  std::string s;
  auto add = [&s](bool on, const char* what) {
    if (on) s += (s.empty() ? "" : ", ") + std::string(what);
  };
  add(l.has_router_bias, "router bias");
  add(l.has_correction_bias, "correction bias");
  add(l.has_expert_biases, "expert biases");
  add(l.transposed, "[E, in, out]");
  add(l.interleaved, "gate/up interleaved");
  return s.empty() ? "-" : s;
}

void print_table(const std::vector<MoeLayerInfo>& layers) {
  std::printf("%-9s %-9s %-24s %-10s %-6s %7s %7s %7s %7s %10s  %s\n", "layers", "family", "layout",
              "quant", "dtype", "experts", "hidden", "inter", "shared", "per layer", "extras");
  uint64_t total = 0;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i + 1;
    while (j < layers.size() && format_key(layers[j]) == format_key(layers[i]) &&
           layers[j].layer == layers[j - 1].layer + 1) {
      ++j;
    }
    const MoeLayerInfo& l = layers[i];
    const std::string range =
        j - i == 1 ? std::to_string(l.layer)
                   : std::to_string(l.layer) + "-" + std::to_string(layers[j - 1].layer);
    std::printf("%-9s %-9s %-24s %-10s %-6s %7d %7lld %7lld %7lld %10s  %s\n", range.c_str(),
                std::string(checkpoint_family_name(l.family)).c_str(),
                std::string(expert_layout_name(l.layout)).c_str(),
                std::string(quant_mode_name(l.quant)).c_str(), l.weight_dtype.c_str(),
                l.num_experts, static_cast<long long>(l.hidden_size),
                static_cast<long long>(l.intermediate_size),
                static_cast<long long>(l.shared_intermediate_size), human_bytes(l.bytes).c_str(),
                extras(l).c_str());
    for (size_t k = i; k < j; ++k) total += layers[k].bytes;
    i = j;
  }
  std::printf("%zu MoE layer%s, %s of MoE tensors\n", layers.size(), layers.size() == 1 ? "" : "s",
              human_bytes(total).c_str());
}

nlohmann::json to_json(const MoeLayerInfo& l) {
  return {{"layer", l.layer},
          {"prefix", l.prefix},
          {"family", checkpoint_family_name(l.family)},
          {"layout", expert_layout_name(l.layout)},
          {"quant", quant_mode_name(l.quant)},
          {"weight_dtype", l.weight_dtype},
          {"num_experts", l.num_experts},
          {"hidden_size", l.hidden_size},
          {"intermediate_size", l.intermediate_size},
          {"shared_intermediate_size", l.shared_intermediate_size},
          {"router_bias", l.has_router_bias},
          {"correction_bias", l.has_correction_bias},
          {"expert_biases", l.has_expert_biases},
          {"transposed", l.transposed},
          {"interleaved", l.interleaved},
          {"tensors", l.num_tensors},
          {"bytes", l.bytes}};
}

// Layer N's tensors: the router, expert 0 (or the stacked tensors), the shared MLP.
void print_tensors(SafetensorsCheckpoint& ckpt, const MoeLayerInfo& l) {
  std::printf("\nlayer %d tensors (%s*):\n", l.layer, l.prefix.c_str());
  const std::string experts = l.prefix + "experts.";
  int skipped = 0;
  for (const std::string& name : ckpt.names_with_prefix(l.prefix)) {
    const std::string rest = name.substr(l.prefix.size());
    const bool other_expert = name.starts_with(experts) && name.size() > experts.size() &&
                              std::isdigit(static_cast<unsigned char>(name[experts.size()])) &&
                              !name.starts_with(experts + "0.");
    if (other_expert) {
      ++skipped;
      continue;
    }
    const auto e = ckpt.get(name);
    std::printf("  %-48s %-8s %-22s %10s  %s\n", rest.c_str(),
                std::string(e.info->dtype->name).c_str(), shape_str(e.info->shape).c_str(),
                human_bytes(e.info->nbytes()).c_str(),
                fs::path(e.file->path()).filename().string().c_str());
  }
  if (skipped > 0) {
    std::printf("  (%d more tensors of experts 1..%d, named like expert 0's)\n", skipped,
                l.num_experts - 1);
  }
}

// Reads every tensor of the layer through CheckpointSource; returns its statistics.
LoadStats verify_layer(const std::shared_ptr<SafetensorsCheckpoint>& ckpt, const MoeConfig& config,
                       int layer) {
  CheckpointSource src(ckpt, config, layer);
  src.enable_progress();
  uint64_t checksum = 0;
  auto touch = [&checksum](const TensorView& t) {
    // One byte per page makes the kernel read the tensor (what a load does).
    const auto* p = static_cast<const uint8_t*>(t.data());
    for (size_t i = 0; i < t.nbytes(); i += 4096) checksum += p[i];
  };
  touch(src.router_weight());
  if (auto b = src.router_bias(); !b.empty()) touch(b);
  if (auto b = src.correction_bias(); !b.empty()) touch(b);
  const std::vector<Proj> projs = src.natural_load_mode() == LoadMode::kVanilla
                                      ? std::vector<Proj>{Proj::kGate, Proj::kUp, Proj::kDown}
                                      : std::vector<Proj>{Proj::kGateUp, Proj::kDown};
  std::vector<int> experts;
  for (int e = 0; e < config.num_experts; ++e) experts.push_back(e);
  if (config.num_shared_experts > 0) experts.push_back(kSharedExpert);
  for (int e : experts) {
    for (Proj p : projs) {
      for (Part part :
           {Part::kWeight, Part::kScale, Part::kGlobalScale, Part::kInputScale, Part::kBias}) {
        if (auto t = src.expert_tensor(e, p, part); !t.empty()) touch(t);
      }
    }
  }
  src.finish_progress();
  if (checksum == 1) std::printf(" ");  // keeps the reads
  return src.stats();
}

// The layer's config: config.json's shape and routing with the quant mode of the tensors, or
// (without config.json) the shapes found with default routing.
MoeConfig layer_config(const std::string& dir, const MoeLayerInfo& l) {
  if (fs::is_directory(dir) && fs::exists(fs::path(dir) / "config.json")) {
    return checkpoint_layer_config(dir, l.layer);
  }
  MoeConfig c;
  c.name = "inspected";
  c.num_experts = l.num_experts;
  c.top_k = 1;
  c.hidden_size = static_cast<int>(l.hidden_size);
  c.intermediate_size = static_cast<int>(l.intermediate_size);
  c.num_shared_experts = l.shared_intermediate_size > 0 ? 1 : 0;
  c.shared_intermediate_size = static_cast<int>(l.shared_intermediate_size);
  c.has_router_bias = l.has_router_bias;
  c.has_expert_biases = l.has_expert_biases;
  c.quant = l.quant;
  return c;
}

int inspect(const InspectOptions& o) {
  auto ckpt = SafetensorsCheckpoint::open(o.path);
  std::vector<MoeLayerInfo> layers;
  if (o.layer) {
    layers.push_back(inspect_moe_layer(*ckpt, *o.layer));
  } else {
    layers = list_moe_layers(*ckpt);
  }
  if (o.json) {
    nlohmann::json out = {{"checkpoint", ckpt->describe()}, {"layers", nlohmann::json::array()}};
    for (const MoeLayerInfo& l : layers) out["layers"].push_back(to_json(l));
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }

  std::printf("%s: %zu tensors\n", ckpt->describe().c_str(), ckpt->names().size());
  const fs::path config_json = fs::path(o.path) / "config.json";
  if (fs::is_directory(o.path) && fs::exists(config_json)) {
    try {
      const MoeConfig c = config_from_hf_json_file(config_json.string());
      std::string summary = c.summary();
      while (!summary.empty() && summary.back() == '\n') summary.pop_back();
      std::printf("config.json:\n%s\n", summary.c_str());
    } catch (const Error& e) {
      std::printf("config.json: not usable: %s\n", e.message().c_str());
    }
  }
  if (layers.empty()) {
    std::printf(
        "no MoE layers found (looked for routers under model.layers.N.{mlp, "
        "block_sparse_moe, feed_forward}.)\n");
    return 1;
  }
  std::printf("\n");
  print_table(layers);
  if (o.layer) print_tensors(*ckpt, layers[0]);

  if (o.verify) {
    std::printf("\n");
    LoadStats total;
    for (const MoeLayerInfo& l : layers) {
      const MoeConfig c = layer_config(o.path, l);
      const LoadStats s = verify_layer(ckpt, c, l.layer);
      std::printf("layer %d: ok, %s\n", l.layer, s.str().c_str());
      total.bytes += s.bytes;
      total.tensors += s.tensors;
      total.seconds += s.seconds;
    }
    if (layers.size() > 1) std::printf("all layers: ok, %s\n", total.str().c_str());
  }
  return 0;
}

}  // namespace

Command add_inspect_command(CLI::App& app) {
  auto opts = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      "List the MoE layers of a safetensors checkpoint (a file, a sharded directory with\n"
      "model.safetensors.index.json, or a directory of .safetensors files): tensor-name\n"
      "family, layout, quant mode, experts, shapes and bytes.");
  cmd->add_option("DIR", opts->path, "Checkpoint directory or .safetensors file")->required();
  cmd->add_option("--layer", opts->layer, "Only this layer, with its tensors listed");
  cmd->add_flag("--verify", opts->verify,
                "Read every tensor of the layer(s) through the loader (dtype and shape checks "
                "against config.json) and print the read throughput");
  cmd->add_flag("--json", opts->json, "Print the layers as JSON");
  return [opts] { return inspect(*opts); };
}

}  // namespace moe::cli
