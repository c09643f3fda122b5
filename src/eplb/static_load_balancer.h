// The load balancer of a layer (DESIGN.md "EPLB"), static mode: a placement fixed when the
// layer is built. In every forward, after routing each chunk, it counts tokens per expert and
// maps the chunk's expert ids to global slot ids in place (slot_routing.h's rule; the CUDA
// kernel in slot_routing_cuda.h on GPU layers), with token_offset = the chunk's first token
// in the forward + the EP rank (so ranks each routing one decode token spread over replicas).
// Without a placement (count_only) it only counts. Counts live where the layer runs; reading
// them synchronises.
//
// Rows (online mode): the backend's "experts" may be more than the slots -- each rank holds
// rows_per_rank >= slots_per_rank weight rows, the extra ones staging migrations -- and
// row_of_slot [num_slots] says which global row (rank r's rows are [r * rows_per_rank,
// (r + 1) * rows_per_rank)) holds each slot now; the routed ids written are those rows.
// Without it (static mode) rows are slots.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "eplb/load_balancer.h"
#include "eplb/slot_table.h"
#include "moe/tensor.h"

namespace moe {

class StaticLoadBalancer final : public LoadBalancer {
 public:
  /// table: the placement (its layout's num_ranks is the EP size); count_only: identity
  /// table, ids are not rewritten.
  StaticLoadBalancer(SlotTable table, int ep_rank, Device device, bool count_only,
                     std::vector<int32_t> row_of_slot = {});
  ~StaticLoadBalancer() override;

  void on_first_chunk(void* stream) override;
  void on_routed(const TensorView& topk_ids, void* stream) override;
  void on_last_chunk(void* stream) override;

  const SlotTable& table() const { return table_; }
  bool maps_slots() const { return !count_only_; }
  /// Tokens routed to each expert since construction or reset [num_experts].
  std::vector<int64_t> token_counts(void* stream) const;
  void reset_counts(void* stream);
  /// Device tokens-per-expert counters, u64 [num_experts] (GPU layers; nullptr on the CPU).
  const void* device_counts() const { return counts_d_.defined() ? counts_d_.data() : nullptr; }

  /// Global row of each slot [num_slots] (identity in static mode).
  std::span<const int32_t> row_of_slot() const { return row_of_slot_; }

  /// Online mode: replaces the placement (same layout) and the slots' rows -- the host
  /// tables now, the device tables by copies enqueued on `stream` into the same buffers
  /// (pinned staging; a previous update's copy is waited for first). Routing on `stream`
  /// afterwards uses the new tables.
  void set_table(SlotTable table, std::vector<int32_t> row_of_slot, void* stream);
  /// Allocates what set_table needs (pinned copies, an event) now, so that the first update
  /// at a forward boundary allocates nothing.
  void prepare_updates();

 private:
  SlotTable table_;
  int ep_rank_;
  Device device_;
  bool count_only_;
  std::vector<int32_t> row_of_slot_;       // [num_slots]
  std::vector<int32_t> expert_rows_;       // [num_slots] expert_slots mapped to rows
  int64_t chunk_offset_ = 0;               // first token of the next chunk within the forward
  std::vector<int64_t> host_counts_;       // CPU layers
  Tensor offsets_d_, slots_d_, counts_d_;  // GPU layers: i32 [E+1], i32 [S], u64 [E]
  // GPU layers, online mode: pinned copies of the tables for set_table, and its last copy.
  int32_t* offsets_pinned_ = nullptr;
  int32_t* slots_pinned_ = nullptr;
  void* table_copied_ = nullptr;  // cudaEvent_t
};

}  // namespace moe
