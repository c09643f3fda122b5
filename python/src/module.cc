// The compiled part of the Python package `moe_engine` (moe_engine._moe_engine, re-exported by
// python/moe_engine/__init__.py): MoE Engine's public C++ API (include/moe/) for Python.
//
//   import moe_engine as me
//   layer = me.Layer(me.preset("qwen3-30b-a3b"))          # or Layer.from_checkpoint(dir)
//   layer.load_random_weights(seed=0)
//   y = layer(x, router_logits)                          # torch / NumPy / any DLPack tensor
//
// This file: the error type (moe_engine.MoeError, a RuntimeError carrying the library's
// message), Config (MoeConfig with its fields as attributes: enums as their names, the
// routing fields flattened), Report (FactoryReport), and the module functions for presets,
// Hugging Face config.json and checkpoint discovery.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings.h"
#include "moe/checkpoint.h"
#include "moe/moe.h"

namespace moe::py {
namespace {

using namespace nb::literals;

// One attribute of Config: its name, getter, setter and documentation.
struct Field {
  const char* name;
  std::function<nb::object(const MoeConfig&)> get;
  std::function<void(MoeConfig&, nb::handle)> set;
  const char* doc;
};

// The value of `v` as T, or a TypeError naming the field and the type expected.
template <class T>
T field_value(nb::handle v, const char* field, const char* expected) {
  T value;
  // Implicit conversions only from int to float (2 -> 2.0), not from float or str to int.
  if (!nb::try_cast(v, value, /*convert=*/std::is_floating_point_v<T>)) {
    throw nb::type_error(("Config." + std::string(field) + " must be " + expected + ", got " +
                          std::string(Py_TYPE(v.ptr())->tp_name))
                             .c_str());
  }
  return value;
}

#define MOE_FIELD(py_name, member, type, doc)                                                    \
  Field {                                                                                        \
    py_name, [](const MoeConfig& c) { return nb::cast(c.member); },                              \
        [](MoeConfig& c, nb::handle v) { c.member = field_value<type>(v, py_name, #type); }, doc \
  }
#define MOE_NAMED_FIELD(py_name, member, to_name, parse, doc)                             \
  Field {                                                                                 \
    py_name, [](const MoeConfig& c) { return nb::cast(std::string(to_name(c.member))); }, \
        [](MoeConfig& c, nb::handle v) {                                                  \
          c.member = parse(field_value<std::string>(v, py_name, "a str"));                \
        },                                                                                \
        doc                                                                               \
  }

DType parse_act_dtype(const std::string& name) { return parse_dtype(name); }

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      MOE_FIELD("name", name, std::string, "preset or model name, for reports"),
      MOE_FIELD("num_experts", num_experts, int, "routed experts E"),
      MOE_FIELD("top_k", top_k, int, "experts per token k"),
      MOE_FIELD("hidden_size", hidden_size, int, "H"),
      MOE_FIELD("intermediate_size", intermediate_size, int, "I, per routed expert"),
      MOE_NAMED_FIELD("activation", activation, activation_name, parse_activation,
                      "'swiglu' or 'swiglu_oai'"),
      MOE_FIELD("swiglu_alpha", swiglu_oai.alpha, float, "GPT-OSS SwiGLU alpha"),
      MOE_FIELD("swiglu_limit", swiglu_oai.limit, float, "GPT-OSS SwiGLU clamp limit"),
      MOE_NAMED_FIELD("routing_method", routing.method, routing_method_name, parse_routing_method,
                      "softmax_topk, deepseek_v3, llama4, gpt_oss"),
      MOE_FIELD("renormalize", routing.renormalize, bool, "divide the k weights by their sum"),
      MOE_FIELD("num_groups", routing.num_groups, int, "DeepSeek-V3 expert groups"),
      MOE_FIELD("topk_groups", routing.topk_groups, int, "DeepSeek-V3 groups kept"),
      MOE_FIELD("routed_scaling_factor", routing.routed_scaling_factor, float,
                "multiplies the final routing weights"),
      MOE_FIELD("has_correction_bias", routing.has_correction_bias, bool,
                "DeepSeek-V3 e_score_correction_bias"),
      MOE_FIELD("has_router_bias", has_router_bias, bool, "router projection bias (GPT-OSS)"),
      MOE_FIELD("has_expert_biases", has_expert_biases, bool, "expert fc1/fc2 biases (GPT-OSS)"),
      MOE_FIELD("num_shared_experts", num_shared_experts, int, "shared experts"),
      MOE_FIELD("shared_intermediate_size", shared_intermediate_size, int,
                "intermediate size of the fused shared MLP"),
      MOE_FIELD("apply_router_weight_on_input", apply_router_weight_on_input, bool,
                "Llama-4: the routing weight scales the expert's input"),
      MOE_NAMED_FIELD("quant", quant, quant_mode_name, parse_quant_mode,
                      "bf16, fp16, fp8_per_tensor, fp8_block, nvfp4, mxfp4, w4a8_mxfp4_mxfp8"),
      MOE_NAMED_FIELD("act_dtype", act_dtype, dtype_name, parse_act_dtype,
                      "element type of x and out: 'bf16' or 'f16'"),
      MOE_FIELD("max_num_tokens", max_num_tokens, int,
                "tokens per chunk; workspaces are sized for this"),
      MOE_NAMED_FIELD("ep_partial_dtype", ep_partial_dtype, dtype_name, parse_act_dtype,
                      "expert parallelism on GPUs: partial sums travel in 'f32' (default) or "
                      "the act_dtype (half the combine's bytes)"),
  };
  return table;
}

#undef MOE_FIELD
#undef MOE_NAMED_FIELD

// Sets the fields named in `kwargs` on `c`; an unknown name is a TypeError listing them.
void set_fields(MoeConfig& c, const nb::kwargs& kwargs) {
  for (auto [key, value] : kwargs) {
    const std::string name = nb::cast<std::string>(key);
    const Field* field = nullptr;
    for (const Field& f : fields()) {
      if (name == f.name) field = &f;
    }
    if (field == nullptr) {
      std::string names;
      for (const Field& f : fields()) names += (names.empty() ? "" : ", ") + std::string(f.name);
      throw nb::type_error(("Config has no field '" + name + "' (fields: " + names + ")").c_str());
    }
    field->set(c, value);
  }
}

void bind_config(nb::module_& m) {
  auto cls = nb::class_<MoeConfig>(
      m, "Config",
      "One MoE layer (moe::MoeConfig). Config(**fields) starts from the C++ defaults; "
      "me.preset(name), me.config_from_hf_json(path) and me.checkpoint_config(dir) give real "
      "models' layers. Enumerations are their names ('bf16', 'softmax_topk', ...).");
  cls.def("__init__",
          [](MoeConfig* c, const nb::kwargs& kwargs) {
            new (c) MoeConfig();
            set_fields(*c, kwargs);
          })
      .def(
          "replace",
          [](const MoeConfig& c, const nb::kwargs& kwargs) {
            MoeConfig copy = c;
            set_fields(copy, kwargs);
            return copy;
          },
          "A copy with the given fields changed: preset('qwen3-30b-a3b').replace(num_experts=16)")
      .def("validate", &MoeConfig::validate,
           "Raises MoeError naming the first inconsistent field and why.")
      .def("summary", &MoeConfig::summary, "Multi-line human-readable description.")
      .def("__copy__", [](const MoeConfig& c) { return c; })
      .def(
          "__deepcopy__", [](const MoeConfig& c, nb::handle) { return c; }, "memo"_a)
      .def("to_dict",
           [](const MoeConfig& c) {
             nb::dict d;
             for (const Field& f : fields()) d[f.name] = f.get(c);
             return d;
           })
      .def("__eq__",
           [](const MoeConfig& a, const MoeConfig& b) {
             for (const Field& f : fields()) {
               if (!f.get(a).equal(f.get(b))) return false;
             }
             return true;
           })
      .def("__repr__", [](const MoeConfig& c) {
        std::string s = "moe_engine.Config(";
        bool first = true;
        for (const Field& f : fields()) {
          s += (first ? "" : ", ") + std::string(f.name) + "=" +
               nb::cast<std::string>(nb::repr(f.get(c)));
          first = false;
        }
        return s + ")";
      });
  for (size_t i = 0; i < fields().size(); ++i) {
    cls.def_prop_rw(
        fields()[i].name, [i](const MoeConfig& c) { return fields()[i].get(c); },
        [i](MoeConfig& c, nb::handle v) { fields()[i].set(c, v); }, fields()[i].doc);
  }
}

void bind_report(nb::module_& m) {
  nb::class_<CandidateReport>(m, "Candidate", "One backend or strategy the factory considered.")
      .def_ro("name", &CandidateReport::name)
      .def_ro("feasible", &CandidateReport::feasible)
      .def_ro("chosen", &CandidateReport::chosen)
      .def_ro("reason", &CandidateReport::reason, "why it can or cannot run this layer")
      .def("__repr__", [](const CandidateReport& c) {
        return "Candidate(" + c.name + ", " +
               (c.chosen     ? "chosen"
                : c.feasible ? "feasible"
                             : "rejected") +
               ": " + c.reason + ")";
      });
  nb::class_<FactoryReport>(m, "Report", "Every decision create_moe made, with reasons.")
      .def_ro("requested_backend", &FactoryReport::requested_backend)
      .def_ro("backend", &FactoryReport::backend, "the backend chosen")
      .def_ro("backends", &FactoryReport::backends, "list[Candidate], in the order tried")
      .def_ro("auto_policy", &FactoryReport::auto_policy)
      .def_ro("communication", &FactoryReport::communication)
      .def_ro("communications", &FactoryReport::communications)
      .def_ro("device", &FactoryReport::device, "the device the layer runs on")
      .def("__str__", &FactoryReport::str)
      .def("__repr__", [](const FactoryReport& r) {
        return "Report(backend=" + r.backend + ", communication=" + r.communication +
               ", device=" + r.device + ")";
      });
}

}  // namespace

}  // namespace moe::py

NB_MODULE(_moe_engine, m) {
  namespace nb = nanobind;
  using namespace moe::py;
  using namespace nb::literals;
  m.doc() = "MoE Engine: the Mixture-of-Experts layer of LLM inference (C++/CUDA) for Python.";
  m.attr("__version__") = MOE_ENGINE_VERSION;
  m.attr("SHARED_EXPERT") = moe::kSharedExpert;
  // Every moe::Error becomes moe_engine.MoeError (a RuntimeError) with the library's message
  // ("... [file:line]").
  nb::exception<moe::Error>(m, "MoeError", PyExc_RuntimeError);

  bind_config(m);
  bind_report(m);
  bind_weights(m);
  bind_layer(m);

  m.def("preset", &moe::preset, "name"_a,
        "A built-in model preset's layer: 'qwen3-30b-a3b', 'deepseek-v3', ... (presets()).");
  m.def("presets", &moe::preset_names, "Names of the built-in presets.");
  m.def("backends", &moe::backend_names, "Backends built into this library.");
  m.def("quant_modes", [] {
    std::vector<std::string> names;
    for (moe::QuantMode q : moe::all_quant_modes()) names.emplace_back(moe::quant_mode_name(q));
    return names;
  });
  m.def("config_from_hf_json", &moe::config_from_hf_json_file, "path"_a,
        "A Hugging Face config.json (or the directory holding it) as a Config.");
  m.def("config_from_hf_json_text", &moe::config_from_hf_json_text, "text"_a, "source"_a = "",
        "The text of a Hugging Face config.json as a Config.");
  m.def("checkpoint_layers", &moe::checkpoint_moe_layers, "path"_a,
        "Indices of the MoE layers of a safetensors checkpoint (directory or file).");
  m.def(
      "checkpoint_config",
      [](const std::string& dir, std::optional<int> layer) {
        if (!layer) {
          const std::vector<int> layers = moe::checkpoint_moe_layers(dir);
          MOE_CHECK(!layers.empty(), dir, ": no MoE layer found");
          layer = layers.front();
        }
        return moe::checkpoint_layer_config(dir, *layer);
      },
      "dir"_a, "layer"_a = nb::none(),
      "The Config of MoE layer `layer` (default: the first) of a checkpoint directory: "
      "config.json's shape and routing, the tensors' quantization.");
}
