// MpiGroup (contract in mpi_group.h).
#ifdef MOE_HAVE_MPI

#include "comm/mpi/mpi_group.h"

#include <chrono>
#include <climits>
#include <limits>
#include <mutex>
#include <thread>

#include "comm/communication.h"
#include "moe/errors.h"

namespace moe {
namespace {

std::string mpi_error_string(int status) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(status, text, &length) != MPI_SUCCESS) {
    return "MPI error " + std::to_string(status);
  }
  return std::string(text, length);
}

/// What a broken group leaves behind, alive until exit (MPI may still write into it).
struct Graveyard {
  std::mutex mutex;
  std::vector<Tensor> tensors;
  std::vector<std::vector<std::vector<int>>> args;
};
Graveyard& graveyard() {
  static Graveyard* g = new Graveyard;  // NOTE: never destroyed, on purpose
  return *g;
}

}  // namespace

Capability mpi_group_available(const Mapping& mapping) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return Capability::no(
        "MPI is not initialised in this process: launch the ranks with mpirun and call "
        "MPI_Init first (the moe command and the MPI tests do)");
  }
  int world_size = 1, world_rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (world_size % mapping.ep_size != 0) {
    return Capability::no("the MPI world has " + std::to_string(world_size) +
                          " ranks, not a multiple of ep_size " + std::to_string(mapping.ep_size));
  }
  if (world_rank % mapping.ep_size != mapping.ep_rank) {
    return Capability::no("MPI world rank " + std::to_string(world_rank) + " would be EP rank " +
                          std::to_string(world_rank % mapping.ep_size) + " of ep_size " +
                          std::to_string(mapping.ep_size) + ", but the mapping says ep_rank " +
                          std::to_string(mapping.ep_rank));
  }
  return Capability::yes("MPI world of " + std::to_string(world_size) + " ranks");
}

MpiGroup::MpiGroup(const Mapping& mapping) {
  const Capability cap = mpi_group_available(mapping);
  MOE_CHECK(cap.ok, "MPI expert-parallel group: ", cap.reason);
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm comm = MPI_COMM_NULL;
  const int status =
      MPI_Comm_split(MPI_COMM_WORLD, world_rank / mapping.ep_size, world_rank, &comm);
  MOE_CHECK(status == MPI_SUCCESS, "MPI_Comm_split for the EP group of world rank ", world_rank,
            ": ", mpi_error_string(status));
  comm_ = comm;
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  MOE_CHECK(rank_ == mapping.ep_rank && size_ == mapping.ep_size, "MPI EP group: got rank ", rank_,
            " of ", size_, ", expected ", mapping.ep_rank, " of ", mapping.ep_size);
}

MpiGroup::~MpiGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (broken_) {
    // Requests may still complete into these buffers: keep them, and the communicator.
    Graveyard& g = graveyard();
    std::lock_guard lock(g.mutex);
    g.tensors.insert(g.tensors.end(), retained_.begin(), retained_.end());
    g.args.push_back(std::move(in_flight_args_));
    return;
  }
  if (finalized) return;
  for (auto& [bytes, type] : row_types_) MPI_Type_free(&type);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiGroup::fail(std::string_view what, const std::string& why) {
  broken_ = true;
  broken_reason_ = std::string(what) + ": " + why;
  MOE_THROW(broken_reason_);
}

void MpiGroup::check_usable(std::string_view what) const {
  MOE_CHECK(!broken_, what, ": the MPI expert-parallel group of rank ", rank_,
            " is unusable after an earlier failure (", broken_reason_, ")");
}

void MpiGroup::check(int status, std::string_view what) const {
  if (status == MPI_SUCCESS) return;
  const_cast<MpiGroup*>(this)->fail(what, "EP rank " + std::to_string(rank_) + " of " +
                                              std::to_string(size_) + ": " +
                                              mpi_error_string(status));
}

void MpiGroup::wait(std::span<MPI_Request> requests, std::string_view what) {
  check_usable(what);
  const double timeout_s = comm_timeout_seconds();
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s);
  for (int64_t polls = 0;; ++polls) {
    int done = 0;
    check(
        MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE),
        what);
    if (done) break;
    if (std::chrono::steady_clock::now() > deadline) {
      fail(what, "EP rank " + std::to_string(rank_) + " of " + std::to_string(size_) + " waited " +
                     std::to_string(timeout_s) +
                     " s for its peers (comm timeout; MOE_COMM_TIMEOUT_S): a peer rank stalled "
                     "or died");
    }
    // Spin briefly, then give the core away: ranks may share cores.
    if (polls < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  in_flight_args_.clear();
}

MPI_Datatype MpiGroup::row_type(size_t row_bytes) {
  auto it = row_types_.find(row_bytes);
  if (it != row_types_.end()) return it->second;
  MOE_CHECK(row_bytes > 0 && row_bytes <= static_cast<size_t>(INT_MAX), "MPI row type of ",
            row_bytes, " bytes");
  MPI_Datatype type = MPI_DATATYPE_NULL;
  check(MPI_Type_contiguous(static_cast<int>(row_bytes), MPI_BYTE, &type), "MPI_Type_contiguous");
  check(MPI_Type_commit(&type), "MPI_Type_commit");
  row_types_[row_bytes] = type;
  return type;
}

std::vector<int> MpiGroup::to_int(std::span<const int64_t> v, std::string_view what) const {
  std::vector<int> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    MOE_CHECK(v[i] >= 0 && v[i] <= INT_MAX, what, ": row count or offset ", v[i],
              " does not fit an MPI count");
    out[i] = static_cast<int>(v[i]);
  }
  return out;
}

std::vector<int64_t> MpiGroup::allgather(int64_t value, std::string_view what) {
  check_usable(what);
  std::vector<int64_t> all(size_);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallgather(&value, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, comm_, &request), what);
  wait({&request, 1}, what);
  return all;
}

std::vector<int64_t> MpiGroup::alltoall(std::span<const int64_t> send, std::string_view what) {
  check_usable(what);
  MOE_CHECK(static_cast<int>(send.size()) == size_, what, ": alltoall of ", send.size(),
            " values in a group of ", size_);
  std::vector<int64_t> recv(size_);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ialltoall(send.data(), 1, MPI_INT64_T, recv.data(), 1, MPI_INT64_T, comm_, &request),
        what);
  wait({&request, 1}, what);
  return recv;
}

int64_t MpiGroup::allreduce_max(int64_t value, std::string_view what) {
  check_usable(what);
  int64_t result = 0;
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallreduce(&value, &result, 1, MPI_INT64_T, MPI_MAX, comm_, &request), what);
  wait({&request, 1}, what);
  return result;
}

std::vector<int64_t> MpiGroup::allreduce_sum(std::span<const int64_t> values,
                                             std::string_view what) {
  check_usable(what);
  std::vector<int64_t> result(values.size(), 0);
  MOE_CHECK(values.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), what, ": ",
            values.size(), " values are too many for one MPI call");
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallreduce(values.data(), result.data(), static_cast<int>(values.size()), MPI_INT64_T,
                       MPI_SUM, comm_, &request),
        what);
  wait({&request, 1}, what);
  return result;
}

void MpiGroup::barrier(std::string_view what) {
  check_usable(what);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ibarrier(comm_, &request), what);
  wait({&request, 1}, what);
}

MPI_Request MpiGroup::iallgatherv(const void* send, int64_t send_rows, void* recv,
                                  std::span<const int64_t> counts, std::span<const int64_t> displs,
                                  size_t row_bytes, std::string_view what) {
  check_usable(what);
  if (row_bytes == 0) return MPI_REQUEST_NULL;
  MPI_Datatype type = row_type(row_bytes);
  in_flight_args_.push_back(to_int(counts, what));
  const int* c = in_flight_args_.back().data();
  in_flight_args_.push_back(to_int(displs, what));
  const int* d = in_flight_args_.back().data();
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallgatherv(send, static_cast<int>(send_rows), type, recv, c, d, type, comm_, &request),
        what);
  return request;
}

MPI_Request MpiGroup::ialltoallv(const void* send, std::span<const int64_t> send_counts,
                                 std::span<const int64_t> send_displs, void* recv,
                                 std::span<const int64_t> recv_counts,
                                 std::span<const int64_t> recv_displs, size_t row_bytes,
                                 std::string_view what) {
  check_usable(what);
  if (row_bytes == 0) return MPI_REQUEST_NULL;
  MPI_Datatype type = row_type(row_bytes);
  std::vector<const int*> args;
  for (auto v : {send_counts, send_displs, recv_counts, recv_displs}) {
    in_flight_args_.push_back(to_int(v, what));
    args.push_back(in_flight_args_.back().data());
  }
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ialltoallv(send, args[0], args[1], type, recv, args[2], args[3], type, comm_, &request),
        what);
  return request;
}

}  // namespace moe

#endif  // MOE_HAVE_MPI
