// MpiGroup: the MPI ranks of one expert-parallel group, with every wait bounded.
//
// The group is MPI_COMM_WORLD split into consecutive blocks of ep_size ranks (rank r of the
// world is EP rank r % ep_size of block r / ep_size), on its own communicator with
// MPI_ERRORS_RETURN: every MPI status is checked and turned into moe::Error. Exchanges are
// non-blocking MPI calls completed by wait(), which polls until comm_timeout_seconds() and
// then throws naming the step and the rank; the group is then broken and refuses further
// work. MPI may still write into the buffers of an abandoned request, so a broken group
// keeps the tensors given to retain() (and its communicator) alive until the process exits.
//
// Payloads move as rows of `row_bytes` bytes (an MPI contiguous type per row size), so
// counts stay small integers for any hidden size.
#pragma once

#ifdef MOE_HAVE_MPI

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "moe/config.h"
#include "moe/tensor.h"

namespace moe {

/// Whether this process can join an MPI group for `mapping`: MPI initialised, the world
/// size a multiple of ep_size, and ep_rank == world rank % ep_size. No communication.
Capability mpi_group_available(const Mapping& mapping);

class MpiGroup {
 public:
  /// Collective over MPI_COMM_WORLD (MPI_Comm_split). Throws moe::Error when
  /// mpi_group_available(mapping) says no.
  explicit MpiGroup(const Mapping& mapping);
  ~MpiGroup();
  MpiGroup(const MpiGroup&) = delete;
  MpiGroup& operator=(const MpiGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm comm() const { return comm_; }

  /// Throws moe::Error naming `what` when an earlier exchange failed.
  void check_usable(std::string_view what) const;
  /// Throws moe::Error naming `what` unless `status` is MPI_SUCCESS.
  void check(int status, std::string_view what) const;
  /// Completes `requests` (null ones are skipped) or throws after the timeout.
  void wait(std::span<MPI_Request> requests, std::string_view what);
  /// Keeps `t` alive as long as MPI may write into it (see the file comment).
  void retain(const Tensor& t) { retained_.push_back(t); }

  /// The contiguous MPI type of `row_bytes` bytes (cached; committed).
  MPI_Datatype row_type(size_t row_bytes);

  // ---- Blocking small exchanges (each waits with the timeout) ----------------------------
  /// Every rank's value, by rank.
  std::vector<int64_t> allgather(int64_t value, std::string_view what);
  /// recv[s] = what rank s sent to this rank (send[d] goes to rank d).
  std::vector<int64_t> alltoall(std::span<const int64_t> send, std::string_view what);
  int64_t allreduce_max(int64_t value, std::string_view what);
  /// Element-wise sum over the ranks (every rank gets it).
  std::vector<int64_t> allreduce_sum(std::span<const int64_t> values, std::string_view what);
  void barrier(std::string_view what);

  // ---- Non-blocking row exchanges (complete them with wait) ------------------------------
  /// Rank s's `counts[s]` rows land at row `displs[s]` of recv. Returns MPI_REQUEST_NULL
  /// when row_bytes == 0.
  MPI_Request iallgatherv(const void* send, int64_t send_rows, void* recv,
                          std::span<const int64_t> counts, std::span<const int64_t> displs,
                          size_t row_bytes, std::string_view what);
  /// Rows [send_displs[d], + send_counts[d]) go to rank d; those of rank s land at
  /// recv_displs[s]. Returns MPI_REQUEST_NULL when row_bytes == 0.
  MPI_Request ialltoallv(const void* send, std::span<const int64_t> send_counts,
                         std::span<const int64_t> send_displs, void* recv,
                         std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs,
                         size_t row_bytes, std::string_view what);

 private:
  [[noreturn]] void fail(std::string_view what, const std::string& why);
  std::vector<int> to_int(std::span<const int64_t> v, std::string_view what) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  bool broken_ = false;
  std::string broken_reason_;
  std::map<size_t, MPI_Datatype> row_types_;
  std::vector<Tensor> retained_;
  // Argument arrays of in-flight non-blocking collectives (MPI reads them until completion).
  std::vector<std::vector<int>> in_flight_args_;
};

}  // namespace moe

#endif  // MOE_HAVE_MPI
