// SlotLayout validation and the two-way slot tables (contract in slot_table.h).
#include "eplb/slot_table.h"

#include <utility>

#include "moe/errors.h"

namespace moe {

SlotLayout make_slot_layout(int num_experts, int num_slots, int num_ranks) {
  MOE_CHECK(num_experts >= 1, "EPLB: num_experts must be >= 1, got ", num_experts);
  MOE_CHECK(num_ranks >= 1, "EPLB: the number of EP ranks must be >= 1, got ", num_ranks);
  MOE_CHECK(num_slots >= num_experts, "EPLB: num_slots (", num_slots, ") < num_experts (",
            num_experts, "): every expert needs at least one slot");
  MOE_CHECK(num_slots % num_ranks == 0, "EPLB: num_slots (", num_slots,
            ") is not divisible by the EP ranks (", num_ranks,
            "): slots are split evenly over ranks");
  return SlotLayout{num_experts, num_slots, num_ranks};
}

SlotTable::SlotTable(const SlotLayout& layout, std::vector<int32_t> slot_to_expert)
    : layout_(make_slot_layout(layout.num_experts, layout.num_slots, layout.num_ranks)),
      slot_to_expert_(std::move(slot_to_expert)) {
  const int num_experts = layout_.num_experts;
  MOE_CHECK(static_cast<int64_t>(slot_to_expert_.size()) == layout_.num_slots,
            "EPLB: slot -> expert table has ", slot_to_expert_.size(), " entries, expected ",
            layout_.num_slots, " (num_slots)");
  expert_slot_offsets_.assign(num_experts + 1, 0);
  for (int s = 0; s < layout_.num_slots; ++s) {
    const int32_t e = slot_to_expert_[s];
    MOE_CHECK(e >= 0 && e < num_experts, "EPLB: slot ", s, " holds expert ", e, ", outside [0, ",
              num_experts, ")");
    ++expert_slot_offsets_[e + 1];
  }
  for (int e = 0; e < num_experts; ++e) {
    MOE_CHECK(expert_slot_offsets_[e + 1] > 0, "EPLB: expert ", e,
              " has no slot (every expert needs at least one)");
    expert_slot_offsets_[e + 1] += expert_slot_offsets_[e];
  }
  // Counting sort: slots ascending within each expert.
  expert_slots_.assign(layout_.num_slots, -1);
  std::vector<int32_t> next(expert_slot_offsets_.begin(), expert_slot_offsets_.end() - 1);
  for (int s = 0; s < layout_.num_slots; ++s) expert_slots_[next[slot_to_expert_[s]]++] = s;
}

SlotTable SlotTable::identity(const SlotLayout& layout) {
  MOE_CHECK(layout.num_slots == layout.num_experts,
            "EPLB: the identity placement needs num_slots (", layout.num_slots,
            ") == num_experts (", layout.num_experts, ")");
  std::vector<int32_t> slot_to_expert(layout.num_slots);
  for (int s = 0; s < layout.num_slots; ++s) slot_to_expert[s] = s;
  return SlotTable(layout, std::move(slot_to_expert));
}

bool SlotTable::has_duplicate_on_rank() const {
  for (int e = 0; e < layout_.num_experts; ++e) {
    const std::span<const int32_t> slots = slots_of(e);
    // Ascending slots: copies on one rank are neighbours.
    for (size_t i = 1; i < slots.size(); ++i) {
      if (layout_.rank_of_slot(slots[i]) == layout_.rank_of_slot(slots[i - 1])) return true;
    }
  }
  return false;
}

}  // namespace moe
