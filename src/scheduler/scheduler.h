// Forward-time policy (DESIGN.md "MoEScheduler"): chunking, zero-token chunks, the order of
// routing -> EPLB hooks -> quantize/dispatch -> run_moe -> combine, and shared experts.
// Schedulers never own weights or communication lifetimes and never advance the layer's
// iteration counter.
#pragma once

#include <memory>

#include "moe/configurable_moe.h"
#include "moe/tensor.h"

namespace moe {

class MoEScheduler {
 public:
  virtual ~MoEScheduler() = default;
  /// x [T, H], router_logits f32 [T, E] or empty, out [T, H]; validated by the caller.
  virtual void forward(ConfigurableMoE& moe, const TensorView& x, const TensorView& router_logits,
                       const TensorView& out, void* stream) = 0;
};

/// Host-issued dispatch/combine around the backend's run_moe, chunk by chunk.
/// Workspaces (routing results, logits, scaled inputs) are allocated once, here, for
/// config.max_num_tokens tokens on `device`.
std::unique_ptr<MoEScheduler> make_external_comm_scheduler(const MoeConfig& config, Device device);

}  // namespace moe
