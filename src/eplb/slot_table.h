// The slot tables of expert-parallel load balancing (DESIGN.md "EPLB").
//
// Three index spaces, never mixed:
//   expert id        e  in [0, num_experts)      what the router returns
//   global slot id   s  in [0, num_slots)        one resident copy of one expert's weights
//   local slot id    l  in [0, slots_per_rank)   a slot's position on its rank
// num_slots >= num_experts (the extra slots hold replicas of hot experts) and the slots are
// split evenly over the EP ranks: rank r holds global slots [r * P, (r + 1) * P) with
// P = slots_per_rank, so global slot s is local slot s % P of rank s / P.
//
// SlotTable holds both directions as flat int32 arrays that a device upload copies as they
// are (no pointers, no padding):
//   slot_to_expert       i32 [num_slots]         expert of each global slot
//   expert_slot_offsets  i32 [num_experts + 1]   CSR row offsets into expert_slots
//   expert_slots         i32 [num_slots]         each expert's global slots, ascending
// Expert e's replicas are expert_slots[expert_slot_offsets[e] .. expert_slot_offsets[e + 1]);
// every expert has at least one, and the two directions agree (checked on construction).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

/// The sizes of the three index spaces and the conversions between slot ids.
struct SlotLayout {
  int num_experts = 0;
  int num_slots = 0;
  int num_ranks = 1;

  int slots_per_rank() const { return num_slots / num_ranks; }
  /// The rank that holds global slot `slot_idx`.
  int rank_of_slot(int slot_idx) const { return slot_idx / slots_per_rank(); }
  /// Global slot -> local slot on its rank.
  int local_slot(int slot_idx) const { return slot_idx % slots_per_rank(); }
  /// (rank, local slot) -> global slot.
  int global_slot(int rank, int local_slot_idx) const {
    return rank * slots_per_rank() + local_slot_idx;
  }
};

/// A validated layout. Throws moe::Error when num_experts or num_ranks < 1, num_slots <
/// num_experts (every expert needs a slot) or num_slots is not divisible by num_ranks.
SlotLayout make_slot_layout(int num_experts, int num_slots, int num_ranks);

/// Expert -> slots and slot -> expert, host copies (see the file comment for the arrays).
class SlotTable {
 public:
  /// Builds both directions from slot -> expert [layout.num_slots]. Throws moe::Error naming
  /// the first slot whose expert is outside [0, num_experts) or the first expert left
  /// without a slot.
  SlotTable(const SlotLayout& layout, std::vector<int32_t> slot_to_expert);

  /// The placement without EPLB: num_slots == num_experts, slot s holds expert s (experts
  /// spread contiguously over the ranks). Throws unless the layout has no spare slots.
  static SlotTable identity(const SlotLayout& layout);

  const SlotLayout& layout() const { return layout_; }
  std::span<const int32_t> slot_to_expert() const { return slot_to_expert_; }
  std::span<const int32_t> expert_slot_offsets() const { return expert_slot_offsets_; }
  std::span<const int32_t> expert_slots() const { return expert_slots_; }

  /// Expert of global slot `slot_idx`.
  int expert_of(int slot_idx) const { return slot_to_expert_[slot_idx]; }
  /// Global slots of `expert_idx`, ascending.
  std::span<const int32_t> slots_of(int expert_idx) const {
    return std::span<const int32_t>(expert_slots_)
        .subspan(expert_slot_offsets_[expert_idx], num_replicas(expert_idx));
  }
  int num_replicas(int expert_idx) const {
    return expert_slot_offsets_[expert_idx + 1] - expert_slot_offsets_[expert_idx];
  }
  /// Experts of rank `rank`'s slots, in local slot order [slots_per_rank].
  std::span<const int32_t> rank_experts(int rank) const {
    return std::span<const int32_t>(slot_to_expert_)
        .subspan(static_cast<size_t>(rank) * layout_.slots_per_rank(), layout_.slots_per_rank());
  }
  /// True when some rank holds two slots of one expert.
  bool has_duplicate_on_rank() const;

 private:
  SlotLayout layout_;
  std::vector<int32_t> slot_to_expert_;       // [num_slots]
  std::vector<int32_t> expert_slot_offsets_;  // [num_experts + 1]
  std::vector<int32_t> expert_slots_;         // [num_slots]
};

}  // namespace moe
