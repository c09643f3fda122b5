// moe_engine.Weights: where a layer's weights come from (include/moe/weights.h).
//
//   me.random_weights(config, seed)           deterministic random weights (make_random_weights)
//   me.open_checkpoint(path, config, layer)   one MoE layer of a safetensors checkpoint
//   me.weights_from_tensors(config, {...})    the caller's own host tensors, without copies
//   me.save_checkpoint(dir, config, weights)  writes config.json + model.safetensors
//
// weights_from_tensors takes the canonical names of include/moe/weights.h:
//   "experts.<e>.<gate_proj|up_proj|down_proj|gate_up_proj>.<weight|weight_scale|
//    weight_scale_2|input_scale|bias>", "shared_experts.<proj>.<part>",
//   "gate.weight" (router [E, H]), "gate.bias", "gate.e_score_correction_bias",
// each a contiguous host tensor in the checkpoint format of config.quant (bf16 as
// torch.bfloat16 or uint16 bits; e4m3 / ue8m0 / e4m3 scales as uint8 or float8; packed fp4 as
// uint8 [out, in / 2]). The arrays are referenced, not copied, until the Weights is dropped.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <map>
#include <set>
#include <string>

#include "bindings.h"
#include "moe/checkpoint.h"
#include "moe/errors.h"
#include "tensor_args.h"

namespace moe::py {

Proj parse_proj(const std::string& name) {
  for (Proj p : {Proj::kGate, Proj::kUp, Proj::kDown, Proj::kGateUp}) {
    if (name == proj_name(p)) return p;
  }
  MOE_THROW("unknown projection '", name, "' (gate_proj, up_proj, down_proj, gate_up_proj)");
}

Part parse_part(const std::string& name) {
  for (Part p : {Part::kWeight, Part::kScale, Part::kGlobalScale, Part::kInputScale, Part::kBias}) {
    if (name == part_name(p)) return p;
  }
  MOE_THROW("unknown tensor part '", name,
            "' (weight, weight_scale, weight_scale_2, input_scale, bias)");
}

std::string load_mode_name(LoadMode mode) {
  return mode == LoadMode::kVanilla ? "vanilla" : "fused_gate_up_proj";
}

LoadMode parse_load_mode(const std::string& name) {
  if (name == "vanilla") return LoadMode::kVanilla;
  if (name == "fused_gate_up_proj") return LoadMode::kFusedGateUpProj;
  MOE_THROW("unknown load mode '", name, "' (vanilla, fused_gate_up_proj)");
}

namespace {

using namespace nb::literals;

constexpr const char* kRouterWeight = "gate.weight";
constexpr const char* kRouterBias = "gate.bias";
constexpr const char* kCorrectionBias = "gate.e_score_correction_bias";

// The 8-bit element type a part is stored in for `quant` (nullopt: none of its tensors is
// 8-bit).
std::optional<DType> byte_dtype(QuantMode quant, Part part) {
  const bool fp8 = quant == QuantMode::kFP8PerTensor || quant == QuantMode::kFP8Block;
  const bool fp4 = quant == QuantMode::kNVFP4 || quant == QuantMode::kMXFP4 ||
                   quant == QuantMode::kW4A8MXFP4MXFP8;
  if (part == Part::kWeight && fp8) return DType::kE4M3;
  if (part == Part::kWeight && fp4) return DType::kE2M1;
  if (part == Part::kScale && quant == QuantMode::kNVFP4) return DType::kE4M3Scale;
  if (part == Part::kScale && fp4) return DType::kUE8M0;
  return std::nullopt;
}

// The caller's tensors by canonical name (see the file comment).
class TensorDictSource final : public WeightSource {
 public:
  TensorDictSource(const MoeConfig& config, const nb::dict& tensors) {
    // Every name a layer of this config can have, with its part.
    std::map<std::string, std::optional<Part>> known = {{kRouterWeight, std::nullopt},
                                                        {kRouterBias, std::nullopt},
                                                        {kCorrectionBias, std::nullopt}};
    const auto add_expert = [&](int e) {
      for (Proj p : {Proj::kGate, Proj::kUp, Proj::kDown, Proj::kGateUp}) {
        for (Part part :
             {Part::kWeight, Part::kScale, Part::kGlobalScale, Part::kInputScale, Part::kBias}) {
          known[expert_tensor_name(e, p, part)] = part;
        }
      }
    };
    for (int e = 0; e < config.num_experts; ++e) add_expert(e);
    if (config.num_shared_experts > 0) add_expert(kSharedExpert);

    for (auto [key, value] : tensors) {
      const std::string name = nb::cast<std::string>(key);
      auto it = known.find(name);
      MOE_CHECK(it != known.end(), "weights_from_tensors: unknown tensor name '", name,
                "' for a layer of ", config.num_experts,
                " experts (expected e.g. 'experts.0.gate_proj.weight', 'shared_experts.up_proj."
                "weight', '",
                kRouterWeight, "')");
      const std::string what = "weights_from_tensors['" + name + "']";
      TensorArg arg = tensor_arg(value, what.c_str(), false,
                                 it->second ? byte_dtype(config.quant, *it->second) : std::nullopt);
      MOE_CHECK(arg.view.device().is_cpu() && arg.view.is_contiguous(), what,
                ": expected a contiguous host tensor, got ", arg.view.str());
      tensors_[name] = std::move(arg);
    }
    describe_ = std::to_string(tensors_.size()) + " tensors from Python";
  }

  TensorView expert_tensor(int expert, Proj proj, Part part) override {
    return find(expert_tensor_name(expert, proj, part));
  }
  TensorView router_weight() override { return find(kRouterWeight); }
  TensorView router_bias() override { return find(kRouterBias); }
  TensorView correction_bias() override { return find(kCorrectionBias); }
  std::string describe() const override { return describe_; }

 private:
  TensorView find(const std::string& name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? TensorView() : it->second.view;
  }
  std::map<std::string, TensorArg> tensors_;
  std::string describe_;
};

nb::object copy_or_none(const TensorView& t) { return t.empty() ? nb::none() : numpy_copy(t); }

}  // namespace

void bind_weights(nb::module_& m) {
  nb::class_<PyWeights>(m, "Weights",
                        "A layer's weights: random, a checkpoint's, or your own tensors.")
      .def(
          "tensor",
          [](PyWeights& w, int expert, const std::string& proj, const std::string& part) {
            return copy_or_none(
                w.source->expert_tensor(expert, parse_proj(proj), parse_part(part)));
          },
          "expert"_a, "proj"_a, "part"_a = "weight",
          "A NumPy copy of expert `expert`'s tensor (SHARED_EXPERT for the shared MLP) in "
          "checkpoint format, or None: bf16 as uint16 bits, 8-bit formats as uint8, packed fp4 "
          "as uint8 [out, in / 2].")
      .def("router_weight", [](PyWeights& w) { return copy_or_none(w.source->router_weight()); })
      .def("router_bias", [](PyWeights& w) { return copy_or_none(w.source->router_bias()); })
      .def("correction_bias",
           [](PyWeights& w) { return copy_or_none(w.source->correction_bias()); })
      .def_prop_ro("load_mode", [](const PyWeights& w) { return load_mode_name(w.load_mode); })
      .def("describe", [](const PyWeights& w) { return w.source->describe(); })
      .def("__repr__",
           [](const PyWeights& w) { return "moe_engine.Weights(" + w.source->describe() + ")"; });

  m.def(
      "random_weights",
      [](const MoeConfig& config, uint64_t seed) {
        config.validate();
        return PyWeights{make_random_weights(config, seed), LoadMode::kVanilla, nb::none()};
      },
      "config"_a, "seed"_a = 0,
      "Deterministic random weights in config.quant's checkpoint format (the same for a "
      "given seed on every machine).");
  m.def(
      "open_checkpoint",
      [](const std::string& path, const MoeConfig& config, std::optional<int> layer) {
        if (!layer) {
          const std::vector<int> layers = checkpoint_moe_layers(path);
          MOE_CHECK(!layers.empty(), path, ": no MoE layer found");
          layer = layers.front();
        }
        CheckpointLayer ckpt = open_checkpoint_layer(path, config, *layer);
        return PyWeights{std::move(ckpt.source), ckpt.load_mode, nb::none()};
      },
      "path"_a, "config"_a, "layer"_a = nb::none(),
      "MoE layer `layer` (default: the first) of a safetensors checkpoint, read for `config`.");
  m.def(
      "weights_from_tensors",
      [](const MoeConfig& config, const nb::dict& tensors, const std::string& load_mode) {
        config.validate();
        return PyWeights{std::make_unique<TensorDictSource>(config, tensors),
                         parse_load_mode(load_mode), tensors};
      },
      "config"_a, "tensors"_a, "load_mode"_a = "vanilla",
      "Your own host tensors by canonical name ('experts.0.gate_proj.weight', 'gate.weight', "
      "...), referenced without copies.");
  m.def(
      "save_checkpoint",
      [](const std::string& dir, const MoeConfig& config, PyWeights& weights, int layer) {
        save_checkpoint_layer(dir, config, *weights.source, layer);
      },
      "dir"_a, "config"_a, "weights"_a, "layer"_a = 0,
      "Writes the weights as MoE layer `layer` of a checkpoint: DIR/config.json and "
      "DIR/model.safetensors (Qwen3-MoE / DeepSeek tensor names).");
}

}  // namespace moe::py
