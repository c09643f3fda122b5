// NcclGroup: the NCCL communicator of one expert-parallel group, with bounded waits.
//
// Created collectively (every rank of the group, in the same order): the MPI group of the
// same ranks (mpi_group.h) carries NCCL's unique id from EP rank 0 and does the host-side
// agreements (chunk counts, token counts) without touching the GPU. One communicator per
// (mapping, GPU) is shared by every layer of the process (NcclGroup::shared).
//
// The communicator is non-blocking (ncclConfig_t::blocking = 0): every call is completed by
// polling ncclCommGetAsyncError until it leaves ncclInProgress (whatever the call returned),
// and wait_stream polls the stream together with ncclCommGetAsyncError; both give up after
// comm_timeout_seconds(), abort the communicator (ncclCommAbort, which also ends NCCL kernels
// stuck on a dead peer) and throw moe::Error naming the step. An aborted group refuses
// further work.
// NOTE: NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE=0 is set when unset, and no
// strategy creates multicast objects.
#pragma once

#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <string>
#include <string_view>

#include "comm/mpi/mpi_group.h"
#include "moe/config.h"

namespace moe {

class NcclGroup {
 public:
  /// The process's group for `mapping` on the current CUDA device; created (collectively)
  /// on first use.
  static std::shared_ptr<NcclGroup> shared(const Mapping& mapping);

  explicit NcclGroup(const Mapping& mapping);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  ncclComm_t comm() const { return comm_; }
  int rank() const { return host_.rank(); }
  int size() const { return host_.size(); }
  int device() const { return device_; }
  /// The same ranks over MPI, for host-side agreement.
  MpiGroup& host() { return host_; }

  /// Throws moe::Error naming `what` when the group was aborted.
  void check_usable(std::string_view what) const;
  /// Completes an NCCL call: waits (bounded) until the communicator has nothing in
  /// progress, then an error aborts the group and throws. Polls even when `status` is
  /// ncclSuccess: on a non-blocking communicator NCCL 2.28 returns ncclSuccess from
  /// ncclCommWindowRegister and ncclDevCommCreate while their work (and the write of their
  /// output handle) still runs in a background job.
  void finish(ncclResult_t status, std::string_view what);
  /// Waits until `stream` is idle (bounded), watching for NCCL errors.
  void wait_stream(cudaStream_t stream, std::string_view what);
  /// Aborts the communicator and throws `why`.
  [[noreturn]] void abort(std::string_view what, const std::string& why);

 private:
  MpiGroup host_;
  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  bool aborted_ = false;
  std::string abort_reason_;
};

}  // namespace moe

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI
