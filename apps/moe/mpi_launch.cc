// MpiLaunch (contract in mpi_launch.h).
#include "moe/mpi_launch.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "moe/errors.h"

#ifdef MOE_HAVE_MPI
#include <mpi.h>
#endif
#ifdef MOE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace moe::cli {
namespace {

const MpiLaunch* g_current = nullptr;

bool launched_by_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

#if defined(MOE_HAVE_MPI) && defined(MOE_HAVE_CUDA)
/// The node-local rank mpirun's environment gives (before MPI_Init), or -1.
int local_rank_from_environment() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return -1;
}

/// One GPU per rank: narrows CUDA_VISIBLE_DEVICES to entry local_rank % (GPUs) of the list
/// (or of the driver's GPUs when unset), so that the rank's GPU is its device 0 and every
/// part of the library that means "the GPU" means this rank's.
/// NOTE: CUDA reads the variable once, at its first call: this runs before MPI_Init (whose
/// transports may touch CUDA) and before any CUDA call.
void narrow_visible_gpus(int local_rank) {
  std::vector<std::string> ids;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (visible != nullptr && *visible != '\0') {
    const std::string list = visible;
    for (size_t at = 0; at != std::string::npos;) {
      const size_t comma = list.find(',', at);
      ids.push_back(list.substr(at, comma == std::string::npos ? comma : comma - at));
      at = comma == std::string::npos ? comma : comma + 1;
    }
  } else {
    int devices = 0;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
      (void)entry;
      ++devices;
    }
    const int count = devices > 0 ? devices : local_rank + 1;
    for (int d = 0; d < count; ++d) ids.push_back(std::to_string(d));
  }
  if (!ids.empty()) setenv("CUDA_VISIBLE_DEVICES", ids[local_rank % ids.size()].c_str(), 1);
}
#endif

}  // namespace

TokenSlice token_slice(int64_t total, int rank, int ranks) {
  MOE_CHECK(total >= 0 && ranks >= 1 && rank >= 0 && rank < ranks, "token_slice: rank ", rank,
            " of ", ranks, " for ", total, " tokens");
  const int64_t base = total / ranks, extra = total % ranks;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

MpiLaunch::MpiLaunch(int& argc, char**& argv) {
#ifdef MOE_HAVE_MPI
  if (launched_by_mpirun()) {
#ifdef MOE_HAVE_CUDA
    const int env_local_rank = local_rank_from_environment();
    if (env_local_rank >= 0) narrow_visible_gpus(env_local_rank);
#endif
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MOE_CHECK(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
                "MPI_Init_thread failed");
      owns_mpi_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm node = MPI_COMM_NULL;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }
#else
  MOE_CHECK(!launched_by_mpirun(),
            "launched by mpirun, but this moe was built without MPI: install libopenmpi-dev "
            "and rebuild, or run one process");
#endif
#ifdef MOE_HAVE_CUDA
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    cudaSetDevice(0);
  } else {
    cudaGetLastError();  // no GPU: the CPU backends run
  }
#endif
  g_current = this;
}

MpiLaunch::~MpiLaunch() {
  if (g_current == this) g_current = nullptr;
#ifdef MOE_HAVE_MPI
  if (owns_mpi_) MPI_Finalize();
#endif
}

const MpiLaunch& MpiLaunch::current() {
  static const MpiLaunch single;
  return g_current != nullptr ? *g_current : single;
}

Tensor MpiLaunch::gather_rows(const TensorView& local) const {
  MOE_CHECK(local.device().is_cpu() && local.is_contiguous() && local.ndim() >= 1,
            "gather_rows: a contiguous host tensor expected, got ", local.str());
  const int64_t rows = local.size(0);
  const size_t row_bytes = rows > 0 ? local.nbytes() / rows : 0;
  std::vector<int64_t> shape(local.shape().begin(), local.shape().end());
  if (!distributed()) {
    Tensor all = Tensor::empty(shape, local.dtype());
    std::memcpy(all.data(), local.data(), local.nbytes());
    return all;
  }
#ifdef MOE_HAVE_MPI
  // Every rank's row count and row size; rows travel as bytes of one contiguous type.
  int64_t mine[2] = {rows, static_cast<int64_t>(row_bytes)};
  std::vector<int64_t> all(2 * size_);
  MPI_Gather(mine, 2, MPI_INT64_T, all.data(), 2, MPI_INT64_T, 0, MPI_COMM_WORLD);
  int64_t row_size = 0;
  if (is_root()) {
    for (int r = 0; r < size_; ++r) {
      if (all[2 * r] == 0) continue;
      MOE_CHECK(row_size == 0 || row_size == all[2 * r + 1], "gather_rows: rank ", r,
                " has rows of ", all[2 * r + 1], " bytes, others ", row_size);
      row_size = all[2 * r + 1];
    }
  }
  MPI_Bcast(&row_size, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
  Tensor result;
  std::vector<int> counts(size_), displs(size_);
  if (is_root()) {
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      counts[r] = static_cast<int>(all[2 * r]);
      displs[r] = static_cast<int>(total);
      total += all[2 * r];
    }
    shape[0] = total;
    result = Tensor::empty(shape, local.dtype());
  }
  if (row_size == 0) return result;
  MPI_Datatype row = MPI_DATATYPE_NULL;
  MPI_Type_contiguous(static_cast<int>(row_size), MPI_BYTE, &row);
  MPI_Type_commit(&row);
  MPI_Gatherv(local.data(), static_cast<int>(rows), row, is_root() ? result.data() : nullptr,
              counts.data(), displs.data(), row, 0, MPI_COMM_WORLD);
  MPI_Type_free(&row);
  return result;
#else
  MOE_UNREACHABLE("distributed launch without MPI");
#endif
}

double MpiLaunch::max_over_ranks(double value) const {
#ifdef MOE_HAVE_MPI
  if (distributed()) {
    double result = value;
    MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return result;
  }
#endif
  return value;
}

void MpiLaunch::barrier() const {
#ifdef MOE_HAVE_MPI
  if (distributed()) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void MpiLaunch::abort(int code) const {
#ifdef MOE_HAVE_MPI
  if (distributed()) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace moe::cli
