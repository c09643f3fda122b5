// Chooses the communication strategy: the requested one, or with "auto" the first that is
// supported on this platform and feasible for this workload, in the documented order.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "comm/communication.h"
#include "moe/configurable_moe.h"

namespace moe {

/// Strategy names in the order "auto" tries them.
std::vector<std::string_view> communication_names();

/// Builds the strategy; appends one CandidateReport per strategy considered. Throws
/// moe::Error naming every candidate's reason when none fits.
std::unique_ptr<Communication> create_communication(const MoeConfig& config, const Mapping& mapping,
                                                    std::string_view requested,
                                                    std::vector<CandidateReport>& report);

}  // namespace moe
