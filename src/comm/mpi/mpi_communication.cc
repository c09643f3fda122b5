// What the MPI strategies share (contract in mpi_communication.h), and their constructor.
#include "comm/mpi/mpi_communication.h"

#include <string>

#include "comm/unavailable_communication.h"
#include "moe/errors.h"

namespace moe {

std::unique_ptr<Communication> make_mpi_communication(std::string_view name,
                                                      const MoeConfig& config,
                                                      const Mapping& mapping) {
#ifdef MOE_HAVE_MPI
  if (name == "allgather_reducescatter") return make_mpi_allgather_reducescatter(config, mapping);
  if (name == "alltoall") return make_mpi_alltoall(config, mapping);
  if (name == "one_sided") return make_mpi_one_sided(config, mapping);
  MOE_UNREACHABLE("no MPI strategy named '", name, "'");
#else
  return std::make_unique<UnavailableCommunication>(
      name,
      "the backend runs on the CPU, where the ranks exchange through MPI, and this build "
      "has no MPI (install libopenmpi-dev and reconfigure)");
#endif
}

#ifdef MOE_HAVE_MPI

MpiCommunication::MpiCommunication(const MoeConfig& config, const Mapping& mapping)
    : config_(config), mapping_(mapping), partition_{config.num_experts, mapping.ep_size} {}

Capability MpiCommunication::is_platform_supported() const {
  Capability cap = mpi_group_available(mapping_);
  if (cap) cap.reason = "host tensors over MPI; " + cap.reason;
  return cap;
}

Capability MpiCommunication::is_workload_feasible(const MoeConfig& config, int max_tokens) const {
  return ep_workload_feasible(config, mapping_, max_tokens);
}

void MpiCommunication::initialize() {
  MOE_CHECK(group_ == nullptr, name(), ": initialize called twice");
  group_ = std::make_unique<MpiGroup>(mapping_);
  initialize_buffers();
}

MpiGroup& MpiCommunication::group() const {
  MOE_CHECK(group_ != nullptr, name(), ": used before initialize()");
  return *group_;
}

int64_t MpiCommunication::agree_num_chunks(int64_t local_chunks, void*) {
  return group().allreduce_max(local_chunks, std::string(name()) + " chunk count agreement");
}

void MpiCommunication::check_routing(const RoutingView& routing, std::string_view step) const {
  const TensorView& ids = routing.topk_ids;
  const TensorView& w = routing.topk_weights;
  MOE_CHECK(ids.ndim() == 2 && ids.dtype() == DType::kI32 && ids.size(1) == config_.top_k &&
                ids.device().is_cpu() && ids.is_contiguous(),
            name(), " ", step, ": topk_ids must be a contiguous host i32 [T, ", config_.top_k,
            "], got ", ids.str());
  MOE_CHECK(w.ndim() == 2 && w.dtype() == DType::kF32 && w.size(0) == ids.size(0) &&
                w.size(1) == config_.top_k && w.device().is_cpu() && w.is_contiguous(),
            name(), " ", step, ": topk_weights must be a contiguous host f32 [", ids.size(0), ", ",
            config_.top_k, "], got ", w.str());
  MOE_CHECK(ids.size(0) <= chunk_capacity(config_.max_num_tokens), name(), " ", step, ": ",
            ids.size(0), " tokens on rank ", mapping_.ep_rank, " exceed the chunk capacity ",
            chunk_capacity(config_.max_num_tokens), " (max_num_tokens / ep_size)");
}

PayloadLayout MpiCommunication::check_payload(const QuantizedInput& x, int64_t tokens) const {
  MOE_CHECK(x.data.device().is_cpu(), name(), " dispatch: the input must be on the host, got ",
            x.data.str());
  const PayloadLayout layout = payload_layout(x, config_.top_k);
  MOE_CHECK(x.data.size(0) == tokens, name(), " dispatch: the input has ", x.data.size(0),
            " rows but prepare_dispatch saw ", tokens, " tokens");
  MOE_CHECK(layout.data_row_bytes <= max_data_row_bytes(config_) &&
                layout.scale_row_bytes <= max_scale_row_bytes(config_),
            name(), " dispatch: rows of ", layout.data_row_bytes, " + ", layout.scale_row_bytes,
            " bytes exceed the buffers (", max_data_row_bytes(config_), " + ",
            max_scale_row_bytes(config_), ")");
  return layout;
}

void MpiCommunication::check_out(const TensorView& out, int64_t tokens,
                                 std::string_view step) const {
  MOE_CHECK(out.ndim() == 2 && out.size(0) == tokens && out.size(1) == config_.hidden_size &&
                (out.dtype() == config_.act_dtype || out.dtype() == DType::kF64) &&
                out.device().is_cpu() && out.is_contiguous(),
            name(), " ", step, ": out must be a contiguous host ", dtype_name(config_.act_dtype),
            " or f64 [", tokens, ", ", config_.hidden_size, "], got ", out.str());
}

Tensor MpiCommunication::byte_rows(int64_t rows, size_t row_bytes) {
  return Tensor::empty({std::max<int64_t>(1, rows * static_cast<int64_t>(row_bytes))}, DType::kU8);
}

DispatchResult MpiCommunication::received(const PayloadLayout& layout, int64_t rows, void* data,
                                          void* scales, const TensorView& x_scales, void* ids,
                                          void* weights, void* expert_out) const {
  const int64_t k = config_.top_k;
  DispatchResult r;
  r.x.data = TensorView(data, layout.data_dtype, {rows, layout.data_cols});  // [T_recv, H]
  r.x.scales = layout.per_row_scales
                   ? TensorView(scales, layout.scale_dtype, {rows, layout.scale_cols})
                   : x_scales;
  r.routing.topk_ids = TensorView(ids, DType::kI32, {rows, k});          // [T_recv, k]
  r.routing.topk_weights = TensorView(weights, DType::kF32, {rows, k});  // [T_recv, k]
  r.expert_out = TensorView(expert_out, partial_sum_dtype(true),
                            {rows, int64_t{config_.hidden_size}});  // f64 [T_recv, H]
  return r;
}

#endif  // MOE_HAVE_MPI

}  // namespace moe
