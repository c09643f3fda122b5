// Canonical names of per-expert tensors (include/moe/weights.h), used in messages and by the
// checkpoint name maps:
//   routed expert e:  "experts.<e>.<proj>.<part>"      e.g. "experts.3.down_proj.weight_scale"
//   shared MLP:       "shared_experts.<proj>.<part>"   (expert == kSharedExpert)
// Projections: gate_proj, up_proj, down_proj, gate_up_proj. Parts: weight, weight_scale,
// weight_scale_2 (NVFP4 global), input_scale, bias.
#include <string>

#include "moe/errors.h"
#include "moe/weights.h"

namespace moe {

std::string_view proj_name(Proj p) {
  switch (p) {
    case Proj::kGate:
      return "gate_proj";
    case Proj::kUp:
      return "up_proj";
    case Proj::kDown:
      return "down_proj";
    case Proj::kGateUp:
      return "gate_up_proj";
  }
  MOE_UNREACHABLE("projection code ", static_cast<int>(p));
}

std::string_view part_name(Part p) {
  switch (p) {
    case Part::kWeight:
      return "weight";
    case Part::kScale:
      return "weight_scale";
    case Part::kGlobalScale:
      return "weight_scale_2";
    case Part::kInputScale:
      return "input_scale";
    case Part::kBias:
      return "bias";
  }
  MOE_UNREACHABLE("tensor part code ", static_cast<int>(p));
}

std::string expert_tensor_name(int expert, Proj proj, Part part) {
  std::string name = expert == kSharedExpert ? std::string("shared_experts.")
                                             : "experts." + std::to_string(expert) + ".";
  name += proj_name(proj);
  name += '.';
  name += part_name(part);
  return name;
}

}  // namespace moe
