// How the ranks of an EP group talk during EPLB's online mode: sum their load statistics,
// agree that a migration is ready, and move slot bytes. One transport per layer, on a
// communicator apart from the forward's, so migration traffic never interleaves with the
// forward's exchanges:
//   one rank         nothing moves between ranks
//   CPU layers       MPI (its own communicator of the EP group)
//   GPU layers       NCCL send/recv (host agreement over MPI) on one communicator per process
//                    and GPU, shared by the layers, its peers connected only when a layer
//                    needs it; on one host, receives are pulled from the peers' memory by
//                    copy engines (CUDA IPC) instead: no kernel competes with the forward's
// Every call is collective: each rank of the group makes the same calls in the same order.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "eplb/expert_tensors.h"
#include "moe/config.h"
#include "moe/errors.h"
#include "moe/tensor.h"

namespace moe {

/// `bytes` bytes at `data` to (send) or from (receive) EP rank `peer`.
struct ByteTransfer {
  int peer = 0;
  void* data = nullptr;
  int64_t bytes = 0;
};

class EplbTransport {
 public:
  virtual ~EplbTransport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;
  /// Element-wise sum of `values` over the ranks, on the host.
  virtual std::vector<int64_t> allreduce_sum(std::span<const int64_t> values) = 0;
  /// True on every rank when `value` is true on every rank.
  virtual bool all(bool value) = 0;
  /// One migration's transfers: the i-th send to a peer matches that peer's i-th receive from
  /// this rank (same byte count). GPU: enqueued on `stream` (a cudaStream_t); CPU: complete
  /// when the call returns. Throws moe::Error (naming the rank) on failure or timeout.
  virtual void exchange(std::span<const ByteTransfer> sends, std::span<const ByteTransfer> receives,
                        void* stream) = 0;

  /// Maps every peer's registered tensors into this process so that receives can be pulled
  /// by copy engines (no kernel on either GPU, no waiting on the peer's stream): GPU ranks of
  /// one host whose tensors were all registered with add_rows. Collective (also when it says
  /// no: every rank then gets false). A later call replaces the mapping (a reload).
  virtual bool share_rows(const ExpertTensorRegistry& registry) { return false; }
  /// After share_rows said yes: copies `bytes` of registered tensor `tensor`, slot `slot` of
  /// rank `peer` to `dst` on `stream`. The peer's slot must not change until the copy is done.
  virtual void pull(int peer, size_t tensor, int slot, void* dst, int64_t bytes, void* stream) {
    MOE_THROW("EPLB transport '", name(), "' cannot pull from peers");
  }
};

/// The transport for an EP group as `mapping` says, for tensors on `device`. Collective when
/// ep_size > 1 (creates a communicator). Throws moe::Error when the build lacks what it needs
/// (MPI for CPU ranks; NCCL and MPI for GPU ranks).
std::unique_ptr<EplbTransport> make_eplb_transport(const Mapping& mapping, Device device);

#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)
/// GPU ranks (eplb_transport_nccl_cuda.cc).
std::unique_ptr<EplbTransport> make_nccl_eplb_transport(const Mapping& mapping);
#endif

}  // namespace moe
