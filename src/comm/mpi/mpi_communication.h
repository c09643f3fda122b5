// The strategies over MPI, for ranks whose backend runs on the CPU (the reference backend):
// what CI runs with mpirun. Each file holds one strategy:
//   mpi_allgather_reducescatter.cc   MPI_Iallgatherv of the tokens and their routing; the
//                                    partial sums go back with MPI_Ialltoallv and are summed
//                                    at the token's rank in ascending rank order
//   mpi_alltoall.cc                  counts by MPI_Ialltoall, then MPI_Ialltoallv of only the
//                                    tokens each rank needs (once per destination rank), and
//                                    the same way back
//   mpi_one_sided.cc                 MPI RMA (passive target): each rank puts its tokens
//                                    straight into the owner's window; the owner's results
//                                    are read back with MPI_Get
// MpiCommunication holds what they share: the group, the lockstep chunk agreement, the
// feasibility checks and the checks of the tensors handed to dispatch and combine.
// Partial sums (dispatch's expert_out, run_moe's output) are f64 (partial_sum_dtype): they
// travel unrounded, and combine sums them in ascending rank order and rounds once.
#pragma once

#include <memory>
#include <string_view>

#include "comm/communication.h"
#include "comm/ep_plan.h"

#ifdef MOE_HAVE_MPI
#include "comm/mpi/mpi_group.h"
#endif

namespace moe {

/// The MPI strategy `name` ("allgather_reducescatter", "alltoall", "one_sided"); without
/// MPI in the build, a stand-in whose is_platform_supported says so.
std::unique_ptr<Communication> make_mpi_communication(std::string_view name,
                                                      const MoeConfig& config,
                                                      const Mapping& mapping);

#ifdef MOE_HAVE_MPI

class MpiCommunication : public Communication {
 public:
  MpiCommunication(const MoeConfig& config, const Mapping& mapping);

  Capability is_platform_supported() const override;
  Capability is_workload_feasible(const MoeConfig& config, int max_tokens) const override;
  bool supports_post_quant_dispatch() const override { return post_quant_dispatch_ok(config_); }
  /// Creates the group (collective), then the strategy's buffers (initialize_buffers).
  void initialize() override;
  int64_t chunk_capacity(int64_t max_num_tokens) const override {
    return max_num_tokens / mapping_.ep_size;
  }
  int64_t agree_num_chunks(int64_t local_chunks, void* stream) override;

 protected:
  virtual void initialize_buffers() = 0;
  MpiGroup& group() const;
  /// Checks the routing of this rank's chunk (host i32/f32 [T, k], T <= the capacity).
  void check_routing(const RoutingView& routing, std::string_view step) const;
  /// Checks x against the routing of prepare_dispatch and returns its layout; the rows must
  /// fit the buffers sized at initialize.
  PayloadLayout check_payload(const QuantizedInput& x, int64_t tokens) const;
  /// Checks `out` is this rank's host act_dtype (or f64: the sum left unrounded) [tokens, H].
  void check_out(const TensorView& out, int64_t tokens, std::string_view step) const;
  /// Bytes of one row of partial sums (f64 [H]: they travel unrounded).
  size_t partial_row_bytes() const { return dtype_bytes(DType::kF64, config_.hidden_size); }
  /// A host tensor of `rows` rows of `row_bytes` bytes (at least one byte).
  static Tensor byte_rows(int64_t rows, size_t row_bytes);
  /// The views of `rows` received tokens stored in the given buffers; scales that are not
  /// per token (layout.per_row_scales false) are `x_scales`, passed through.
  DispatchResult received(const PayloadLayout& layout, int64_t rows, void* data, void* scales,
                          const TensorView& x_scales, void* ids, void* weights,
                          void* expert_out) const;

  MoeConfig config_;
  Mapping mapping_;
  ExpertPartition partition_;
  std::unique_ptr<MpiGroup> group_;
};

std::unique_ptr<Communication> make_mpi_allgather_reducescatter(const MoeConfig& config,
                                                                const Mapping& mapping);
std::unique_ptr<Communication> make_mpi_alltoall(const MoeConfig& config, const Mapping& mapping);
std::unique_ptr<Communication> make_mpi_one_sided(const MoeConfig& config, const Mapping& mapping);

#endif  // MOE_HAVE_MPI

}  // namespace moe
