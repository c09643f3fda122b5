// The parts of the moe_engine Python module (python/src/*.cc) and the types they share.
//
//   module.cc            NB_MODULE: the error type, Config, Report, presets, config readers,
//                        checkpoint discovery
//   weights_binding.cc   Weights: random, checkpoint or user tensors (a dict of arrays)
//   layer_binding.cc     Layer: create_moe, load, forward / route on DLPack tensors
#pragma once

#include <nanobind/nanobind.h>

#include <memory>
#include <string>

#include "moe/config.h"
#include "moe/weights.h"

namespace moe::py {

namespace nb = nanobind;

/// A WeightSource held by Python, with the LoadMode its layout maps to and whatever Python
/// objects its tensors point into.
struct PyWeights {
  std::unique_ptr<WeightSource> source;
  LoadMode load_mode = LoadMode::kVanilla;
  nb::object keep_alive;
};

void bind_weights(nb::module_& m);
void bind_layer(nb::module_& m);

/// "gate_proj" -> Proj::kGate, ...; throws moe::Error listing the names.
Proj parse_proj(const std::string& name);
/// "weight", "weight_scale", ... -> Part; throws moe::Error listing the names.
Part parse_part(const std::string& name);
/// "vanilla" / "fused_gate_up_proj".
std::string load_mode_name(LoadMode mode);
LoadMode parse_load_mode(const std::string& name);

}  // namespace moe::py
