// read_eplb_placement (include/moe/configurable_moe.h): the placement file of
// `moe eplb plan --out`, checked against the layer.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eplb/slot_table.h"
#include "moe/configurable_moe.h"
#include "moe/errors.h"

namespace moe {

std::vector<int32_t> read_eplb_placement(const std::string& path, const MoeConfig& config,
                                         int ep_size) {
  std::ifstream in(path);
  MOE_CHECK(in.good(), "EPLB placement ", path, ": cannot open the file");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    MOE_THROW("EPLB placement ", path, ": not valid JSON (", e.what(), ")");
  }
  MOE_CHECK(j.is_object(), "EPLB placement ", path, ": expected a JSON object");
  auto int_field = [&](const char* key) -> int64_t {
    MOE_CHECK(j.contains(key) && j[key].is_number_integer(), "EPLB placement ", path, ": field '",
              key, "' missing or not an integer");
    return j[key].get<int64_t>();
  };
  const int64_t experts = int_field("num_experts");
  const int64_t slots = int_field("num_slots");
  const int64_t ranks = int_field("num_ranks");
  MOE_CHECK(experts == config.num_experts, "EPLB placement ", path, ": num_experts ", experts,
            " but the layer has ", config.num_experts);
  MOE_CHECK(slots >= experts && slots <= (int64_t{1} << 20), "EPLB placement ", path,
            ": num_slots ", slots, " (must be >= num_experts ", experts, ")");
  MOE_CHECK(slots % ep_size == 0, "EPLB placement ", path, ": num_slots ", slots,
            " is not divisible by ep_size ", ep_size);
  MOE_CHECK(ranks >= 1, "EPLB placement ", path, ": num_ranks ", ranks);
  MOE_CHECK(j.contains("slot_to_expert") && j["slot_to_expert"].is_array(), "EPLB placement ", path,
            ": field 'slot_to_expert' missing or not an array");
  const auto& arr = j["slot_to_expert"];
  MOE_CHECK(static_cast<int64_t>(arr.size()) == slots, "EPLB placement ", path,
            ": slot_to_expert has ", arr.size(), " entries, num_slots is ", slots);
  std::vector<int32_t> table(slots);
  for (int64_t s = 0; s < slots; ++s) {
    MOE_CHECK(arr[s].is_number_integer(), "EPLB placement ", path, ": slot_to_expert[", s,
              "] is not an integer");
    table[s] = arr[s].get<int32_t>();
  }
  // Every expert in some slot, ids in range (SlotTable names the first bad slot or expert).
  try {
    SlotTable(make_slot_layout(static_cast<int>(experts), static_cast<int>(slots), ep_size), table);
  } catch (const Error& e) {
    MOE_THROW("EPLB placement ", path, ": ", e.message());
  }
  return table;
}

}  // namespace moe
