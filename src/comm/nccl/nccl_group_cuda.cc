// NcclGroup (contract in nccl_group.h).
#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

#include "comm/nccl/nccl_group.h"

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "comm/communication.h"
#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point deadline() {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(comm_timeout_seconds()));
}

}  // namespace

std::shared_ptr<NcclGroup> NcclGroup::shared(const Mapping& mapping) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int>, std::weak_ptr<NcclGroup>> groups;
  int device = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard lock(mutex);
  auto& slot = groups[{mapping.ep_size, mapping.ep_rank, device}];
  std::shared_ptr<NcclGroup> group = slot.lock();
  if (!group) {
    group = std::make_shared<NcclGroup>(mapping);
    slot = group;
  }
  return group;
}

NcclGroup::NcclGroup(const Mapping& mapping) : host_(mapping) {
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  MOE_CUDA_CHECK(cudaGetDevice(&device_));
  ncclUniqueId id{};
  if (host_.rank() == 0) MOE_NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_Request request = MPI_REQUEST_NULL;
  host_.check(MPI_Ibcast(&id, sizeof(id), MPI_BYTE, 0, host_.comm(), &request),
              "NCCL unique id broadcast");
  host_.wait({&request, 1}, "NCCL unique id broadcast");
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = "moe_ep";
  ncclComm_t comm = nullptr;
  const ncclResult_t status =
      ncclCommInitRankConfig(&comm, host_.size(), id, host_.rank(), &config);
  comm_ = comm;
  finish(status, "ncclCommInitRankConfig");
}

NcclGroup::~NcclGroup() {
  if (comm_ == nullptr) return;
  if (aborted_) return;  // ncclCommAbort already freed it
  // Finalize flushes outstanding work (bounded); a peer that never comes makes it abort.
  const ncclResult_t status = ncclCommFinalize(comm_);
  const auto until = deadline();
  ncclResult_t state = status;
  while (state == ncclInProgress && Clock::now() < until) {
    ncclCommGetAsyncError(comm_, &state);
    std::this_thread::yield();
  }
  if (state == ncclSuccess) {
    ncclCommDestroy(comm_);
  } else {
    ncclCommAbort(comm_);
  }
}

void NcclGroup::check_usable(std::string_view what) const {
  MOE_CHECK(!aborted_, what, ": the NCCL expert-parallel group of rank ", rank(),
            " was aborted after an earlier failure (", abort_reason_, ")");
}

void NcclGroup::abort(std::string_view what, const std::string& why) {
  if (!aborted_ && comm_ != nullptr) ncclCommAbort(comm_);
  aborted_ = true;
  abort_reason_ = std::string(what) + ": " + why;
  MOE_THROW(abort_reason_);
}

void NcclGroup::finish(ncclResult_t status, std::string_view what) {
  const auto until = deadline();
  // NOTE: a call that returned ncclSuccess may still have started a background job (2.28:
  // ncclCommWindowRegister returns its own status, not the group's ncclInProgress); its
  // results, e.g. the window handle, are written only when the job ends.
  if (status == ncclSuccess && comm_ != nullptr) ncclCommGetAsyncError(comm_, &status);
  while (status == ncclInProgress) {
    if (Clock::now() > until) {
      abort(what, "EP rank " + std::to_string(rank()) + " waited " +
                      std::to_string(comm_timeout_seconds()) +
                      " s for NCCL (comm timeout; MOE_COMM_TIMEOUT_S): a peer rank stalled or "
                      "died; communicator aborted");
    }
    std::this_thread::yield();
    if (comm_ == nullptr) break;
    ncclCommGetAsyncError(comm_, &status);
  }
  if (status != ncclSuccess) {
    const char* last = ncclGetLastError(comm_);
    abort(what, std::string(ncclGetErrorString(status)) +
                    ((last && *last) ? std::string(" (") + last + ")" : std::string()) +
                    " on EP rank " + std::to_string(rank()));
  }
}

void NcclGroup::wait_stream(cudaStream_t stream, std::string_view what) {
  check_usable(what);
  const auto until = deadline();
  for (int64_t polls = 0;; ++polls) {
    const cudaError_t state = cudaStreamQuery(stream);
    if (state == cudaSuccess) return;
    if (state != cudaErrorNotReady) {
      abort(what, std::string("CUDA error while waiting: ") + cudaGetErrorString(state));
    }
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    if (async != ncclSuccess && async != ncclInProgress) finish(async, what);
    if (Clock::now() > until) {
      abort(what, "EP rank " + std::to_string(rank()) + " waited " +
                      std::to_string(comm_timeout_seconds()) +
                      " s for its peers (comm timeout; MOE_COMM_TIMEOUT_S): a peer rank stalled "
                      "or died; communicator aborted");
    }
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace moe

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI
