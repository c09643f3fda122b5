// NcclCommunication: what the NCCL strategies share (contract in nccl_communication.h).
#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

#include <string>

#include "comm/nccl/ep_kernels.h"
#include "comm/nccl/nccl_communication.h"
#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe {

NcclCommunication::NcclCommunication(const MoeConfig& config, const Mapping& mapping)
    : config_(config), mapping_(mapping), partition_{config.num_experts, mapping.ep_size} {}

Capability NcclCommunication::is_platform_supported() const {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    return Capability::no("no CUDA device is visible to this rank");
  }
  Capability cap = mpi_group_available(mapping_);
  if (!cap) return Capability::no("NCCL's unique id travels over MPI: " + cap.reason);
  int version = 0;
  ncclGetVersion(&version);
  return Capability::yes("NCCL " + std::to_string(version) + " on " + std::to_string(devices) +
                         " visible GPU(s); " + cap.reason);
}

Capability NcclCommunication::is_workload_feasible(const MoeConfig& config, int max_tokens) const {
  if (mapping_.ep_size > ep::kMaxRanks) {
    return Capability::no("ep_size " + std::to_string(mapping_.ep_size) + " exceeds the " +
                          std::to_string(ep::kMaxRanks) + " ranks the NCCL strategies plan for");
  }
  if (config.act_dtype != DType::kBF16 && config.act_dtype != DType::kF16) {
    return Capability::no("act_dtype must be bf16 or f16");
  }
  return ep_workload_feasible(config, mapping_, max_tokens);
}

void NcclCommunication::initialize() {
  MOE_CHECK(group_ == nullptr, name(), ": initialize called twice");
  group_ = NcclGroup::shared(mapping_);
  initialize_buffers();
}

NcclGroup& NcclCommunication::group() const {
  MOE_CHECK(group_ != nullptr, name(), ": used before initialize()");
  return *group_;
}

int64_t NcclCommunication::agree_num_chunks(int64_t local_chunks, void*) {
  group().check_usable(name());
  return group().host().allreduce_max(local_chunks, std::string(name()) + " chunk agreement");
}

void NcclCommunication::check_routing(const RoutingView& routing, std::string_view step) const {
  const TensorView& ids = routing.topk_ids;
  const TensorView& w = routing.topk_weights;
  const Device dev = device();
  MOE_CHECK(ids.ndim() == 2 && ids.dtype() == DType::kI32 && ids.size(1) == config_.top_k &&
                ids.device() == dev && ids.is_contiguous(),
            name(), " ", step, ": topk_ids must be a contiguous i32 [T, ", config_.top_k, "] on ",
            dev.str(), ", got ", ids.str());
  MOE_CHECK(w.ndim() == 2 && w.dtype() == DType::kF32 && w.size(0) == ids.size(0) &&
                w.size(1) == config_.top_k && w.device() == dev && w.is_contiguous(),
            name(), " ", step, ": topk_weights must be a contiguous f32 [", ids.size(0), ", ",
            config_.top_k, "] on ", dev.str(), ", got ", w.str());
  MOE_CHECK(ids.size(0) <= chunk_capacity(config_.max_num_tokens), name(), " ", step, ": ",
            ids.size(0), " tokens on rank ", mapping_.ep_rank, " exceed the chunk capacity ",
            chunk_capacity(config_.max_num_tokens), " (max_num_tokens / ep_size)");
}

PayloadLayout NcclCommunication::check_payload(const QuantizedInput& x, int64_t tokens) const {
  MOE_CHECK(x.data.device() == device(), name(), " dispatch: the input must be on ", device().str(),
            ", got ", x.data.str());
  const PayloadLayout layout = payload_layout(x, config_.top_k);
  MOE_CHECK(x.data.size(0) == tokens, name(), " dispatch: the input has ", x.data.size(0),
            " rows but prepare_dispatch saw ", tokens, " tokens");
  MOE_CHECK(layout.data_row_bytes <= max_data_row_bytes(config_) &&
                layout.scale_row_bytes <= max_scale_row_bytes(config_),
            name(), " dispatch: rows of ", layout.data_row_bytes, " + ", layout.scale_row_bytes,
            " bytes exceed the buffers (", max_data_row_bytes(config_), " + ",
            max_scale_row_bytes(config_), ")");
  MOE_CHECK(!layout.per_row_scales || x.scales.device() == device(), name(),
            " dispatch: scales must be on ", device().str(), ", got ", x.scales.str());
  return layout;
}

void NcclCommunication::check_out(const TensorView& out, int64_t tokens,
                                  std::string_view step) const {
  MOE_CHECK(out.ndim() == 2 && out.size(0) == tokens && out.size(1) == config_.hidden_size &&
                out.dtype() == config_.act_dtype && out.device() == device() && out.is_contiguous(),
            name(), " ", step, ": out must be a contiguous ", dtype_name(config_.act_dtype), " [",
            tokens, ", ", config_.hidden_size, "] on ", device().str(), ", got ", out.str());
}

Tensor NcclCommunication::device_rows(int64_t rows, size_t row_bytes) const {
  return Tensor::empty({std::max<int64_t>(16, rows * static_cast<int64_t>(row_bytes))}, DType::kU8,
                       device());
}

DispatchResult NcclCommunication::received(const PayloadLayout& layout, int64_t rows, void* data,
                                           void* scales, const TensorView& x_scales, void* ids,
                                           void* weights, void* expert_out) const {
  const int64_t k = config_.top_k;
  const Device dev = device();
  DispatchResult r;
  r.x.data = TensorView(data, layout.data_dtype, {rows, layout.data_cols}, dev);
  r.x.scales = layout.per_row_scales
                   ? TensorView(scales, layout.scale_dtype, {rows, layout.scale_cols}, dev)
                   : x_scales;
  r.routing.topk_ids = TensorView(ids, DType::kI32, {rows, k}, dev);
  r.routing.topk_weights = TensorView(weights, DType::kF32, {rows, k}, dev);
  r.expert_out = TensorView(expert_out, config_.ep_partial_dtype,
                            {rows, int64_t{config_.hidden_size}}, dev);  // f32 [T_recv, H]
  return r;
}

}  // namespace moe

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI
