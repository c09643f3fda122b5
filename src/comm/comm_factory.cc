// The communication factory (contract and order in comm_factory.h).
#include "comm/comm_factory.h"

#include <string>

#include "comm/mpi/mpi_communication.h"
#include "comm/nccl/nccl_communication.h"
#include "moe/errors.h"

namespace moe {
namespace {

using Maker = std::unique_ptr<Communication> (*)(const MoeConfig&, const Mapping&, Device);

struct CommEntry {
  std::string_view name;
  Maker create;
};

template <const char* kName>
std::unique_ptr<Communication> make_cross_rank(const MoeConfig& config, const Mapping& mapping,
                                               Device device) {
  if (device.is_cuda()) return make_nccl_communication(kName, config, mapping);
  return make_mpi_communication(kName, config, mapping);
}

constexpr char kOneSided[] = "one_sided";
constexpr char kAllToAll[] = "alltoall";
constexpr char kAllgatherReduceScatter[] = "allgather_reducescatter";

// The order "auto" tries (see comm_factory.h for why).
const std::vector<CommEntry>& registry() {
  static const std::vector<CommEntry> entries = {
      {"local",
       [](const MoeConfig&, const Mapping& m, Device) -> std::unique_ptr<Communication> {
         return std::make_unique<LocalCommunication>(m);
       }},
      {kOneSided, &make_cross_rank<kOneSided>},
      {kAllToAll, &make_cross_rank<kAllToAll>},
      {kAllgatherReduceScatter, &make_cross_rank<kAllgatherReduceScatter>},
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
                                                    Device device, std::string_view requested,
                                                    std::vector<CandidateReport>& report) {
  const bool any = requested == "auto";
  bool known = any;
  std::string reasons;
  for (const auto& entry : registry()) {
    if (!any && entry.name != requested) continue;
    known = true;
    auto comm = entry.create(config, mapping, device);
    Capability cap = comm->is_platform_supported();
    if (cap) cap = comm->is_workload_feasible(config, config.max_num_tokens);
    report.push_back({std::string(entry.name), cap.ok, false, cap.reason});
    if (cap) {
      report.back().chosen = true;
      comm->initialize();
      return comm;
    }
    reasons += "\n  " + std::string(entry.name) + ": " + cap.reason;
  }
  if (!known) {
    std::string names;
    for (auto n : communication_names()) names += (names.empty() ? "" : ", ") + std::string(n);
    MOE_THROW("unknown communication strategy '", requested, "' (built: ", names, ")");
  }
  MOE_THROW("no communication strategy can run ep_size ", mapping.ep_size, " (rank ",
            mapping.ep_rank, ", backend on ", device.str(), ")", reasons);
}

std::unique_ptr<Communication> create_communication(const MoeConfig& config, const Mapping& mapping,
                                                    std::string_view requested,
                                                    std::vector<CandidateReport>& report) {
  return create_communication(config, mapping, Device::cpu(), requested, report);
}

}  // namespace moe
