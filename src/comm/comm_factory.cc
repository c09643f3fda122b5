#include "comm/comm_factory.h"

#include <functional>
#include <string>

#include "moe/errors.h"

namespace moe {
namespace {

struct CommEntry {
  std::string_view name;
  std::function<std::unique_ptr<Communication>(const Mapping&)> create;
};

// The order "auto" tries. The cross-rank strategies (one_sided, alltoall,
// allgather_reducescatter) join this list when they are built.
const std::vector<CommEntry>& registry() {
  static const std::vector<CommEntry> entries = {
      {"local", [](const Mapping& m) { return std::make_unique<LocalCommunication>(m); }},
  };
  return entries;
}

}  // namespace

std::vector<std::string_view> communication_names() {
  std::vector<std::string_view> names;
  for (const auto& e : registry()) names.push_back(e.name);
  return names;
}

std::unique_ptr<Communication> create_communication(const MoeConfig& config, const Mapping& mapping,
                                                    std::string_view requested,
                                                    std::vector<CandidateReport>& report) {
  const bool any = requested == "auto";
  bool known = any;
  std::string reasons;
  for (const auto& entry : registry()) {
    if (!any && entry.name != requested) continue;
    known = true;
    auto comm = entry.create(mapping);
    Capability cap = comm->is_platform_supported();
    if (cap) cap = comm->is_workload_feasible(config, config.max_num_tokens);
    report.push_back({std::string(entry.name), cap.ok, false, cap.reason});
    if (cap) {
      report.back().chosen = true;
      return comm;
    }
    reasons += "\n  " + std::string(entry.name) + ": " + cap.reason;
  }
  if (!known) {
    std::string names;
    for (auto n : communication_names()) names += (names.empty() ? "" : ", ") + std::string(n);
    MOE_THROW("unknown communication strategy '", requested, "' (built: ", names, ")");
  }
  MOE_THROW("no communication strategy can run ep_size ", mapping.ep_size,
            " (this build has: local only)", reasons);
}

}  // namespace moe
