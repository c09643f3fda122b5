// The expert -> slot mapping of routed tokens on the GPU (slot_routing.h is the host rule,
// bit for bit the same) and the per-expert token counts. Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moe {

struct SlotRoutingParams {
  int32_t* ids = nullptr;  // [entries] expert ids in, slot ids out (in place)
  int64_t entries = 0;     // T * top_k
  int top_k = 0;
  int num_experts = 0;
  const int32_t* expert_slot_offsets = nullptr;  // [E + 1] (device)
  const int32_t* expert_slots = nullptr;         // [S] (device)
  int64_t token_offset = 0;                      // slot_routing.h
  unsigned long long* counts = nullptr;          // [E] tokens per expert, added to
  bool map = true;                               // false: count only (no EPLB placement)
};

/// One launch on `stream` (none for 0 entries); ids outside [0, E) are left as they are and
/// not counted (the router never produces them).
void launch_slot_routing(const SlotRoutingParams& p, cudaStream_t stream);

}  // namespace moe
