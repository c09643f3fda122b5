// The weights a backend loads under EPLB: its "experts" are global slots (or, in online mode,
// weight rows: eplb/online_load_balancer.h), and slot s serves
// the checkpoint tensors of expert slot_to_expert[s] (replicas read the same tensors). Every
// other tensor (shared experts, router) passes through.
#pragma once

#include <span>
#include <string>

#include "moe/errors.h"
#include "moe/weights.h"

namespace moe {

class SlotWeightSource final : public WeightSource {
 public:
  SlotWeightSource(WeightSource& source, std::span<const int32_t> slot_to_expert)
      : source_(source), slot_to_expert_(slot_to_expert) {}

  TensorView expert_tensor(int slot, Proj proj, Part part) override {
    if (slot == kSharedExpert) return source_.expert_tensor(slot, proj, part);
    MOE_CHECK(slot >= 0 && slot < static_cast<int>(slot_to_expert_.size()), "EPLB: slot ", slot,
              " outside [0, ", slot_to_expert_.size(), ")");
    return source_.expert_tensor(slot_to_expert_[slot], proj, part);
  }
  TensorView router_weight() override { return source_.router_weight(); }
  TensorView router_bias() override { return source_.router_bias(); }
  TensorView correction_bias() override { return source_.correction_bias(); }
  std::string describe() const override {
    return source_.describe() + " (by EPLB slot: " + std::to_string(slot_to_expert_.size()) +
           " slots)";
  }

 private:
  WeightSource& source_;
  std::span<const int32_t> slot_to_expert_;
};

}  // namespace moe
