// Chooses the communication strategy: the requested one, or with "auto" the first that is
// supported on this platform and feasible for this workload, in the documented order
// (communication_names()), and initialises it.
//
// The order "auto" tries, and why:
//   local                    one rank: nothing to move, so nothing is cheaper
//   one_sided                decode latency: one kernel writes each token into its owner's
//                            buffer (NCCL symmetric memory; MPI RMA on the CPU); no host
//                            synchronisation on the GPU (CUDA-graph capturable)
//   alltoall                 large batches: moves only the tokens each rank needs, once per
//                            destination rank
//   allgather_reducescatter  always works: every rank sees every token (moves ep times the
//                            data; for small EP and attention data parallelism)
// Which transport a strategy uses follows the device the backend's tensors live on: NCCL
// for a GPU backend (src/comm/nccl/), MPI for a CPU backend (src/comm/mpi/). Strategies the
// build lacks are listed with the reason.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "comm/communication.h"
#include "moe/configurable_moe.h"

namespace moe {

/// Strategy names in the order "auto" tries them.
std::vector<std::string_view> communication_names();

/// Builds the strategy for a backend whose tensors live on `device`, initialises it (a
/// collective step over the EP group for the cross-rank strategies: every rank must call
/// this in the same order) and appends one CandidateReport per strategy considered. Throws
/// moe::Error naming every candidate's reason when none fits.
std::unique_ptr<Communication> create_communication(const MoeConfig& config, const Mapping& mapping,
                                                    Device device, std::string_view requested,
                                                    std::vector<CandidateReport>& report);

/// As above for a backend on the host (the reference backend).
/// NOTE: GPU backends must use the overload with their device.
std::unique_ptr<Communication> create_communication(const MoeConfig& config, const Mapping& mapping,
                                                    std::string_view requested,
                                                    std::vector<CandidateReport>& report);

}  // namespace moe
