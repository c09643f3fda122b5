// The ranks of one `moe` invocation: one process, or N started by `mpirun -np N moe ...`.
//
// Under mpirun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in the environment) and with MPI
// in the build, MpiLaunch initialises MPI; rank r of N runs EP rank r of ep_size N
// (mapping()), sees only GPU local_rank % visible GPUs (CUDA_VISIBLE_DEVICES is narrowed to
// it before the first CUDA call, so it is device 0), and the communication strategies get
// their MPI group and NCCL's unique id from that world (src/comm). Otherwise it is one rank
// and touches no MPI: single-process runs need none.
//
// What a command does with it (the layer's tokens spread over the ranks, rank 0 writing the
// gathered output):
//   MpiLaunch launch(argc, argv);                  // in main, before anything else
//   const MpiLaunch& l = MpiLaunch::current();     // in a command
//   auto layer = create_moe(config, l.mapping(), options).moe;
//   const TokenSlice mine = l.token_slice(T);      // rows [begin, end) of the T tokens
//   layer->forward(x.slice_rows(mine.begin, mine.end), ..., out_mine);
//   Tensor all = l.gather_rows(out_mine_on_host);  // [T, H] on rank 0, empty elsewhere
#pragma once

#include <cstdint>

#include "moe/config.h"
#include "moe/tensor.h"

namespace moe::cli {

/// Rows [begin, end) of a token range.
struct TokenSlice {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

/// Rank `rank` of `ranks` takes rows [begin, end) of `total`: the first total % ranks ranks
/// take one more (ranks past `total` take none).
TokenSlice token_slice(int64_t total, int rank, int ranks);

class MpiLaunch {
 public:
  /// Initialises MPI when launched by mpirun (see the file comment) and selects the GPU.
  MpiLaunch(int& argc, char**& argv);
  /// MPI_Finalize when this object initialised MPI.
  ~MpiLaunch();
  MpiLaunch(const MpiLaunch&) = delete;
  MpiLaunch& operator=(const MpiLaunch&) = delete;

  /// The launch main created, or a single rank when there is none.
  static const MpiLaunch& current();

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  bool distributed() const { return size_ > 1; }
  bool is_root() const { return rank_ == 0; }
  /// Expert parallelism over every rank: {size, rank}.
  Mapping mapping() const { return {size_, rank_}; }
  /// This rank's share of `total` tokens.
  TokenSlice token_slice(int64_t total) const { return moe::cli::token_slice(total, rank_, size_); }

  /// Every rank's `local` rows (a contiguous host tensor [T_r, ...] of one dtype and row size
  /// on every rank), concatenated in rank order on rank 0; an undefined Tensor elsewhere.
  /// Collective.
  Tensor gather_rows(const TensorView& local) const;
  /// The largest of every rank's `value` (e.g. a time), on every rank. Collective.
  double max_over_ranks(double value) const;
  void barrier() const;
  /// Ends every rank (MPI_Abort) with `code`; a single rank just exits. For main's error
  /// path, so that the peers of a failed rank do not wait for it.
  [[noreturn]] void abort(int code) const;

 private:
  MpiLaunch() = default;  // a single rank
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  bool owns_mpi_ = false;
};

}  // namespace moe::cli
