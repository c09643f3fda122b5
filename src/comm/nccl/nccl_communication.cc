// make_nccl_communication: the NCCL strategies when the build has NCCL and MPI, else a
// stand-in that says which is missing.
#include "comm/nccl/nccl_communication.h"

#include "comm/unavailable_communication.h"
#include "moe/errors.h"

namespace moe {

std::unique_ptr<Communication> make_nccl_communication(std::string_view name,
                                                       const MoeConfig& config,
                                                       const Mapping& mapping) {
#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)
  if (name == "allgather_reducescatter") return make_nccl_allgather_reducescatter(config, mapping);
  if (name == "alltoall") return make_nccl_alltoall(config, mapping);
  if (name == "one_sided") return make_nccl_one_sided(config, mapping);
  MOE_UNREACHABLE("no NCCL strategy named '", name, "'");
#elif defined(MOE_HAVE_NCCL)
  return std::make_unique<UnavailableCommunication>(
      name,
      "the backend runs on a GPU, where the ranks exchange through NCCL, whose unique id "
      "travels over MPI, and this build has no MPI (install libopenmpi-dev)");
#else
  return std::make_unique<UnavailableCommunication>(
      name,
      "the backend runs on a GPU, where the ranks exchange through NCCL, and this build "
      "has no NCCL");
#endif
}

}  // namespace moe
