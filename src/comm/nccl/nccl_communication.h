// The strategies over NCCL, for ranks whose backend runs on a GPU (one process per GPU,
// started by mpirun; NCCL's unique id travels over MPI, nccl_group.h). Each file holds one
// strategy, its kernels in ep_kernels.cu / one_sided_kernels.cu:
//   nccl_allgather_reducescatter_cuda.cc  ncclAllGather of the tokens and their routing
//                                         (padded to the largest rank's count), partial sums
//                                         back with ncclReduceScatter
//   nccl_alltoall_cuda.cc                 counts by ncclAlltoAll (read on the host), then
//                                         grouped ncclSend/ncclRecv of only the tokens each
//                                         rank needs, once per destination rank, and back
//   nccl_one_sided_cuda.cc                NCCL symmetric memory (ncclMemAlloc +
//                                         ncclCommWindowRegister): each rank writes its
//                                         tokens straight into the owner's window through
//                                         LSA pointers; sizes stay in device memory, so the
//                                         exchange is CUDA-graph capturable
#pragma once

#include <memory>
#include <string_view>

#include "comm/communication.h"
#include "comm/ep_plan.h"

#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)
#include <cuda_runtime_api.h>

#include "comm/nccl/nccl_group.h"
#endif

namespace moe {

/// The NCCL strategy `name` ("allgather_reducescatter", "alltoall", "one_sided"); without
/// NCCL or MPI in the build, a stand-in whose is_platform_supported says why.
std::unique_ptr<Communication> make_nccl_communication(std::string_view name,
                                                       const MoeConfig& config,
                                                       const Mapping& mapping);

#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

std::unique_ptr<Communication> make_nccl_allgather_reducescatter(const MoeConfig& config,
                                                                 const Mapping& mapping);
std::unique_ptr<Communication> make_nccl_alltoall(const MoeConfig& config, const Mapping& mapping);
std::unique_ptr<Communication> make_nccl_one_sided(const MoeConfig& config, const Mapping& mapping);

/// What the NCCL strategies share: the group, host-side chunk agreement (over MPI: no GPU
/// synchronisation), feasibility, and the checks of the device tensors they are handed.
class NcclCommunication : public Communication {
 public:
  NcclCommunication(const MoeConfig& config, const Mapping& mapping);

  Capability is_platform_supported() const override;
  Capability is_workload_feasible(const MoeConfig& config, int max_tokens) const override;
  bool supports_post_quant_dispatch() const override { return post_quant_dispatch_ok(config_); }
  /// Joins (or creates, collectively) the group, then the strategy's buffers.
  void initialize() override;
  int64_t chunk_capacity(int64_t max_num_tokens) const override {
    return max_num_tokens / mapping_.ep_size;
  }
  int64_t agree_num_chunks(int64_t local_chunks, void* stream) override;

 protected:
  virtual void initialize_buffers() = 0;
  NcclGroup& group() const;
  /// Checks the routing of this rank's chunk (device i32/f32 [T, k], T <= the capacity).
  void check_routing(const RoutingView& routing, std::string_view step) const;
  /// Checks x (on this GPU, `tokens` rows, rows within the buffers) and returns its layout.
  PayloadLayout check_payload(const QuantizedInput& x, int64_t tokens) const;
  void check_out(const TensorView& out, int64_t tokens, std::string_view step) const;
  /// A device buffer of `rows` rows of `row_bytes` bytes (at least one byte).
  Tensor device_rows(int64_t rows, size_t row_bytes) const;
  /// Bytes of one row of partial sums (config_.ep_partial_dtype [H]: f32 travels unrounded;
  /// combine sums in fp32 and rounds once).
  size_t partial_row_bytes() const {
    return dtype_bytes(config_.ep_partial_dtype, config_.hidden_size);
  }
  /// The views of `rows` received rows in the given device buffers.
  DispatchResult received(const PayloadLayout& layout, int64_t rows, void* data, void* scales,
                          const TensorView& x_scales, void* ids, void* weights,
                          void* expert_out) const;
  Device device() const { return Device::cuda(group().device()); }

  MoeConfig config_;
  Mapping mapping_;
  ExpertPartition partition_;
  std::shared_ptr<NcclGroup> group_;
};

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI

}  // namespace moe
