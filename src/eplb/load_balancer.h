// Expert-parallel load balancing (DESIGN.md "EPLB"): the hooks the scheduler calls in every
// forward. The balancer itself (statistics, placement, slot routing, migration) is built on
// this interface; a layer without one (nullptr) routes expert ids unchanged.
#pragma once

#include "moe/tensor.h"

namespace moe {

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;
  /// Before the first chunk of a forward (e.g. swap in migrated weights at this boundary).
  virtual void on_first_chunk(void* stream) = 0;
  /// After routing a chunk: count tokens per expert, then map expert ids -> slot ids in place.
  virtual void on_routed(const TensorView& topk_ids, void* stream) = 0;
  /// After the last chunk (e.g. fold the iteration's statistics into the window).
  virtual void on_last_chunk(void* stream) = 0;
};

}  // namespace moe
