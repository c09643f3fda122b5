#include <cstring>

#include "comm/communication.h"
#include "moe/errors.h"

namespace moe {

Capability LocalCommunication::is_platform_supported() const {
  return Capability::yes("one rank: nothing to exchange");
}

Capability LocalCommunication::is_workload_feasible(const MoeConfig&, int) const {
  if (mapping_.ep_size != 1) {
    return Capability::no("local runs one rank; ep_size is " + std::to_string(mapping_.ep_size));
  }
  return Capability::yes("ep_size 1");
}

DispatchResult LocalCommunication::dispatch(const QuantizedInput& x, const RoutingView& routing,
                                            const TensorView& out, void*) {
  return {x, routing, out};
}

void LocalCommunication::combine(const TensorView& expert_out, const TensorView& out, void*) {
  // dispatch handed `out` itself to the backend: nothing to move.
  MOE_CHECK(expert_out.data() == out.data() || out.numel() == 0, "local combine: expert output ",
            expert_out.str(), " is not the layer output");
}

}  // namespace moe
