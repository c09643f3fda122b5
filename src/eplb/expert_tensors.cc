#include "eplb/expert_tensors.h"

#include <algorithm>

#include "moe/errors.h"

namespace moe {

std::string_view eplb_support_name(EplbSupport support) {
  switch (support) {
    case EplbSupport::kSupported:
      return "supported";
    case EplbSupport::kNotVerified:
      return "not verified";
    case EplbSupport::kNotSupported:
      return "not supported";
  }
  return "?";
}

ExpertTensorRegistry::ExpertTensorRegistry(int num_local_slots, Device device)
    : num_local_slots_(num_local_slots), device_(device) {
  MOE_CHECK(num_local_slots >= 1, "EPLB registry: ", num_local_slots, " local slots");
}

int64_t ExpertTensorRegistry::slot_bytes() const {
  int64_t bytes = 0;
  for (const ExpertTensor& t : tensors_) bytes += t.slot_bytes;
  return bytes;
}

void ExpertTensorRegistry::set_support(EplbSupport support, std::string reason) {
  MOE_CHECK(support == EplbSupport::kSupported || !reason.empty(),
            "EPLB registry: a quant method that is not fully supported must say why");
  support_ = support;
  reason_ = std::move(reason);
}

ExpertTensor& ExpertTensorRegistry::find_or_add(const std::string& name, int64_t slot_bytes) {
  for (ExpertTensor& t : tensors_) {
    if (t.name != name) continue;
    MOE_CHECK(t.slot_bytes == slot_bytes, "EPLB registry: tensor '", name, "' has ", t.slot_bytes,
              " bytes per slot, now ", slot_bytes);
    return t;
  }
  tensors_.push_back({name, slot_bytes, std::vector<std::byte*>(num_local_slots_, nullptr)});
  return tensors_.back();
}

void ExpertTensorRegistry::add_rows(std::string name, const Tensor& t) {
  if (!t.defined() || t.nbytes() == 0) return;  // a part the layer does not have
  MOE_CHECK(t.view().is_contiguous() && t.ndim() >= 1, "EPLB registry: tensor '", name,
            "' must be contiguous with a group dimension, got ", t.view().str());
  MOE_CHECK(t.device() == device_, "EPLB registry: tensor '", name, "' is on ", t.device().str(),
            ", the layer on ", device_.str());
  MOE_CHECK(t.size(0) >= num_local_slots_, "EPLB registry: tensor '", name, "' has ", t.size(0),
            " groups for ", num_local_slots_, " local slots");
  for (const ExpertTensor& e : tensors_) {
    MOE_CHECK(e.name != name, "EPLB registry: tensor '", name, "' registered twice");
  }
  const auto row_bytes = static_cast<int64_t>(t.nbytes() / t.size(0));
  ExpertTensor& e = find_or_add(name, row_bytes);
  auto* base = static_cast<std::byte*>(t.data());
  for (int l = 0; l < num_local_slots_; ++l) e.slots[l] = base + l * row_bytes;
  e.base = base;
  e.stride = row_bytes;
}

void ExpertTensorRegistry::add_slot(std::string name, int local_slot, const Tensor& t) {
  if (!t.defined() || t.nbytes() == 0) return;  // a part the layer does not have
  MOE_CHECK(local_slot >= 0 && local_slot < num_local_slots_, "EPLB registry: tensor '", name,
            "': local slot ", local_slot, " outside [0, ", num_local_slots_, ")");
  MOE_CHECK(t.view().is_contiguous(), "EPLB registry: tensor '", name, "' of slot ", local_slot,
            " must be contiguous, got ", t.view().str());
  MOE_CHECK(t.device() == device_, "EPLB registry: tensor '", name, "' is on ", t.device().str(),
            ", the layer on ", device_.str());
  ExpertTensor& e = find_or_add(name, static_cast<int64_t>(t.nbytes()));
  MOE_CHECK(e.slots[local_slot] == nullptr, "EPLB registry: tensor '", name, "' of slot ",
            local_slot, " registered twice");
  e.slots[local_slot] = static_cast<std::byte*>(t.data());
}

void ExpertTensorRegistry::validate() const {
  for (const ExpertTensor& t : tensors_) {
    for (int l = 0; l < num_local_slots_; ++l) {
      MOE_CHECK(t.slots[l] != nullptr, "EPLB registry: tensor '", t.name,
                "' has no bytes for local slot ", l);
    }
  }
}

void ExpertTensorRegistry::drop_for_testing(std::string_view name) {
  auto it = std::find_if(tensors_.begin(), tensors_.end(),
                         [&](const ExpertTensor& t) { return t.name == name; });
  MOE_CHECK(it != tensors_.end(), "EPLB registry: no tensor '", name, "' to drop");
  tensors_.erase(it);
}

}  // namespace moe
