// The load balancer of a layer (DESIGN.md "EPLB"), static mode: a placement fixed when the
// layer is built. In every forward, after routing each chunk, it counts tokens per expert and
// maps the chunk's expert ids to global slot ids in place (slot_routing.h's rule; the CUDA
// kernel in slot_routing_cuda.h on GPU layers), with token_offset = the chunk's first token
// in the forward + the EP rank (so ranks each routing one decode token spread over replicas).
// Without a placement (count_only) it only counts. Counts live where the layer runs; reading
// them synchronises.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "eplb/load_balancer.h"
#include "eplb/slot_table.h"
#include "moe/tensor.h"

namespace moe {

class StaticLoadBalancer final : public LoadBalancer {
 public:
  /// table: the placement (its layout's num_ranks is the EP size); count_only: identity
  /// table, ids are not rewritten.
  StaticLoadBalancer(SlotTable table, int ep_rank, Device device, bool count_only);
  ~StaticLoadBalancer() override;

  void on_first_chunk(void* stream) override;
  void on_routed(const TensorView& topk_ids, void* stream) override;
  void on_last_chunk(void* stream) override;

  const SlotTable& table() const { return table_; }
  bool maps_slots() const { return !count_only_; }
  /// Tokens routed to each expert since construction or reset [num_experts].
  std::vector<int64_t> token_counts(void* stream) const;
  void reset_counts(void* stream);

 private:
  SlotTable table_;
  int ep_rank_;
  Device device_;
  bool count_only_;
  int64_t chunk_offset_ = 0;               // first token of the next chunk within the forward
  std::vector<int64_t> host_counts_;       // CPU layers
  Tensor offsets_d_, slots_d_, counts_d_;  // GPU layers: i32 [E+1], i32 [S], u64 [E]
};

}  // namespace moe
