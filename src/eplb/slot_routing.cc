// Host reference of expert id -> slot id routing (the rule in slot_routing.h).
#include "eplb/slot_routing.h"

#include "moe/errors.h"

namespace moe {

void map_experts_to_slots(std::span<const int32_t> expert_ids, int top_k, const SlotTable& table,
                          std::span<int32_t> slot_ids, int64_t token_offset) {
  MOE_CHECK(top_k >= 1, "map_experts_to_slots: top_k must be >= 1, got ", top_k);
  MOE_CHECK(expert_ids.size() % top_k == 0, "map_experts_to_slots: ", expert_ids.size(),
            " expert ids are not a whole number of rows of top_k = ", top_k);
  MOE_CHECK(slot_ids.size() == expert_ids.size(), "map_experts_to_slots: ", slot_ids.size(),
            " slot ids for ", expert_ids.size(), " expert ids");
  const int num_experts = table.layout().num_experts;
  const int64_t num_tokens = static_cast<int64_t>(expert_ids.size()) / top_k;
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int j = 0; j < top_k; ++j) {
      const size_t i = static_cast<size_t>(t) * top_k + j;
      const int32_t e = expert_ids[i];
      MOE_CHECK(e >= 0 && e < num_experts, "map_experts_to_slots: expert id ", e, " at [", t, ", ",
                j, "] is outside [0, ", num_experts, ")");
      slot_ids[i] = slot_for_token(table, e, token_offset + t, j);
    }
  }
}

std::vector<int32_t> map_experts_to_slots(std::span<const int32_t> expert_ids, int top_k,
                                          const SlotTable& table, int64_t token_offset) {
  std::vector<int32_t> slot_ids(expert_ids.size());
  map_experts_to_slots(expert_ids, top_k, table, slot_ids, token_offset);
  return slot_ids;
}

void map_experts_to_slots(const TensorView& topk_ids, const SlotTable& table,
                          const TensorView& slot_ids, int64_t token_offset) {
  MOE_CHECK(topk_ids.ndim() == 2 && topk_ids.dtype() == DType::kI32 && topk_ids.device().is_cpu() &&
                topk_ids.is_contiguous(),
            "map_experts_to_slots: topk_ids must be a contiguous host i32 [T, k] tensor, got ",
            topk_ids.str());
  const int64_t num_tokens = topk_ids.size(0);
  const int64_t top_k = topk_ids.size(1);
  check_tensor(slot_ids, "map_experts_to_slots: slot_ids", DType::kI32, {num_tokens, top_k});
  MOE_CHECK(slot_ids.device().is_cpu() && slot_ids.is_contiguous(),
            "map_experts_to_slots: slot_ids must be a contiguous host tensor, got ",
            slot_ids.str());
  const size_t n = static_cast<size_t>(num_tokens * top_k);
  map_experts_to_slots(std::span<const int32_t>(topk_ids.data_as<const int32_t>(), n),
                       static_cast<int>(top_k), table,
                       std::span<int32_t>(slot_ids.data_as<int32_t>(), n), token_offset);
}

}  // namespace moe
