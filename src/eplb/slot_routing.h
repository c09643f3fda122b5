// Expert id -> global slot id for routed tokens: the host reference of the rule that the
// device kernel (later) must match bit for bit (DESIGN.md "EPLB"; slot_table.h).
//
// The rule. Token row t of topk_ids [T, k], position j, expert e with replicas
// slots_of(e) = expert_slots[expert_slot_offsets[e] ..) of count r:
//
//     replica = (token_offset + t + j) mod r        (unsigned 64-bit arithmetic)
//     slot    = expert_slots[expert_slot_offsets[e] + replica]
//
// Why this rule: a token picks an expert at most once, so the tokens that pick a hot expert
// e at one position j are distinct rows; consecutive such rows take consecutive replicas
// (exact round robin over any r rows in a row, whatever r and k are), and + j shifts the
// positions against one another so that experts picked at different positions do not all
// start on replica 0. (The flat index t * k + j would send every token to the same replica
// whenever r divides k, e.g. a hot expert picked first with r = k = 8.) It is closed-form
// per entry: no counters, no atomics, so a kernel reproduces it exactly in any thread order.
// token_offset lets callers decorrelate ranks and chunks: e.g. pass the chunk's first token
// index plus the EP rank, so that ranks each routing one decode token do not all choose
// replica 0.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eplb/slot_table.h"
#include "moe/tensor.h"

namespace moe {

/// The slot of expert `expert_idx` picked at (row token_idx, position k) (the rule above).
inline int32_t slot_for_token(const SlotTable& table, int expert_idx, int64_t token_idx, int k) {
  const std::span<const int32_t> slots = table.slots_of(expert_idx);
  const uint64_t replica =
      (static_cast<uint64_t>(token_idx) + static_cast<uint64_t>(k)) % slots.size();
  return slots[replica];
}

/// slot_ids[t * top_k + j] = the slot of expert_ids[t * top_k + j] (the rule above) for
/// expert_ids [T, top_k] flattened; slot_ids may alias expert_ids (in place). Throws
/// moe::Error on sizes that disagree or naming the first (row, position) whose id is outside
/// [0, num_experts).
void map_experts_to_slots(std::span<const int32_t> expert_ids, int top_k, const SlotTable& table,
                          std::span<int32_t> slot_ids, int64_t token_offset = 0);

/// As above, returning slot ids [T * top_k].
std::vector<int32_t> map_experts_to_slots(std::span<const int32_t> expert_ids, int top_k,
                                          const SlotTable& table, int64_t token_offset = 0);

/// As above on host tensors: topk_ids i32 [T, k] contiguous -> slot_ids i32 [T, k]
/// contiguous (may be topk_ids itself, which is what LoadBalancer::on_routed does).
void map_experts_to_slots(const TensorView& topk_ids, const SlotTable& table,
                          const TensorView& slot_ids, int64_t token_offset = 0);

}  // namespace moe
