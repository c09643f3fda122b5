#include "eplb/static_load_balancer.h"

#include <cstring>

#include "eplb/slot_routing.h"
#include "moe/errors.h"

#ifdef MOE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "eplb/slot_routing_cuda.h"
#endif

namespace moe {

namespace {

/// Each expert's slots (CSR order of the table) as rows.
std::vector<int32_t> rows_of_expert_slots(const SlotTable& table,
                                          std::span<const int32_t> row_of_slot) {
  std::vector<int32_t> rows(table.expert_slots().begin(), table.expert_slots().end());
  for (int32_t& r : rows) r = row_of_slot[r];
  return rows;
}

std::vector<int32_t> checked_rows(const SlotTable& table, std::vector<int32_t> row_of_slot) {
  const int s = table.layout().num_slots;
  if (row_of_slot.empty()) {
    row_of_slot.resize(s);
    for (int i = 0; i < s; ++i) row_of_slot[i] = i;
  }
  MOE_CHECK(static_cast<int>(row_of_slot.size()) == s, "EPLB: ", row_of_slot.size(),
            " slot rows for ", s, " slots");
  return row_of_slot;
}

}  // namespace

StaticLoadBalancer::StaticLoadBalancer(SlotTable table, int ep_rank, Device device, bool count_only,
                                       std::vector<int32_t> row_of_slot)
    : table_(std::move(table)),
      ep_rank_(ep_rank),
      device_(device),
      count_only_(count_only),
      row_of_slot_(checked_rows(table_, std::move(row_of_slot))),
      expert_rows_(rows_of_expert_slots(table_, row_of_slot_)) {
  const int e = table_.layout().num_experts;
  if (device_.is_cpu()) {
    host_counts_.assign(e, 0);
    return;
  }
#ifdef MOE_HAVE_CUDA
  const int s = table_.layout().num_slots;
  offsets_d_ = Tensor::empty({e + 1}, DType::kI32, device_);
  slots_d_ = Tensor::empty({s}, DType::kI32, device_);
  counts_d_ = Tensor::empty({e}, DType::kI64, device_);
  MOE_CUDA_CHECK(cudaMemcpy(offsets_d_.data(), table_.expert_slot_offsets().data(),
                            (e + 1) * sizeof(int32_t), cudaMemcpyHostToDevice));
  MOE_CUDA_CHECK(cudaMemcpy(slots_d_.data(), expert_rows_.data(), s * sizeof(int32_t),
                            cudaMemcpyHostToDevice));
  MOE_CUDA_CHECK(cudaMemset(counts_d_.data(), 0, e * sizeof(int64_t)));
#else
  MOE_THROW("EPLB on ", device_.str(), ": this build has no CUDA");
#endif
}

StaticLoadBalancer::~StaticLoadBalancer() {
#ifdef MOE_HAVE_CUDA
  // Destructors do not throw: a failure to free is only reported.
  if (table_copied_ != nullptr) {
    cudaEventSynchronize(static_cast<cudaEvent_t>(table_copied_));
    cudaEventDestroy(static_cast<cudaEvent_t>(table_copied_));
  }
  if (offsets_pinned_ != nullptr) cudaFreeHost(offsets_pinned_);
  if (slots_pinned_ != nullptr) cudaFreeHost(slots_pinned_);
#endif
}

void StaticLoadBalancer::prepare_updates() {
  if (device_.is_cpu() || table_copied_ != nullptr) return;
#ifdef MOE_HAVE_CUDA
  const SlotLayout& l = table_.layout();
  cudaEvent_t ev = nullptr;
  MOE_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  table_copied_ = ev;
  MOE_CUDA_CHECK(cudaMallocHost(&offsets_pinned_, (l.num_experts + 1) * sizeof(int32_t)));
  MOE_CUDA_CHECK(cudaMallocHost(&slots_pinned_, l.num_slots * sizeof(int32_t)));
#endif
}

void StaticLoadBalancer::set_table(SlotTable table, std::vector<int32_t> row_of_slot,
                                   void* stream) {
  const SlotLayout& a = table_.layout();
  const SlotLayout& b = table.layout();
  MOE_CHECK(
      a.num_experts == b.num_experts && a.num_slots == b.num_slots && a.num_ranks == b.num_ranks,
      "EPLB: a new placement must keep the layout (", a.num_experts, " experts, ", a.num_slots,
      " slots, ", a.num_ranks, " ranks)");
  MOE_CHECK(!count_only_, "EPLB: a counting-only balancer has no placement to replace");
  row_of_slot_ = checked_rows(table, std::move(row_of_slot));
  table_ = std::move(table);
  expert_rows_ = rows_of_expert_slots(table_, row_of_slot_);
  if (device_.is_cpu()) return;
#ifdef MOE_HAVE_CUDA
  const size_t e = a.num_experts, s = a.num_slots;
  prepare_updates();
  // The pinned copies may still feed the previous update's transfer.
  MOE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(table_copied_)));
  std::memcpy(offsets_pinned_, table_.expert_slot_offsets().data(), (e + 1) * sizeof(int32_t));
  std::memcpy(slots_pinned_, expert_rows_.data(), s * sizeof(int32_t));
  auto st = static_cast<cudaStream_t>(stream);
  MOE_CUDA_CHECK(cudaMemcpyAsync(offsets_d_.data(), offsets_pinned_, (e + 1) * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, st));
  MOE_CUDA_CHECK(cudaMemcpyAsync(slots_d_.data(), slots_pinned_, s * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, st));
  MOE_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(table_copied_), st));
#endif
}

void StaticLoadBalancer::on_first_chunk(void*) { chunk_offset_ = 0; }

void StaticLoadBalancer::on_routed(const TensorView& topk_ids, void* stream) {
  MOE_CHECK(topk_ids.ndim() == 2 && topk_ids.dtype() == DType::kI32 && topk_ids.is_contiguous() &&
                topk_ids.device() == device_,
            "EPLB: topk_ids must be contiguous i32 [T, k] on ", device_.str(), ", got ",
            topk_ids.str());
  const int64_t t = topk_ids.size(0), k = topk_ids.size(1);
  const int64_t token_offset = chunk_offset_ + ep_rank_;
  const int num_experts = table_.layout().num_experts;
  if (device_.is_cpu()) {
    const int32_t* ids = topk_ids.data_as<const int32_t>();
    for (int64_t i = 0; i < t * k; ++i) {
      MOE_CHECK(ids[i] >= 0 && ids[i] < num_experts, "EPLB: routed id ", ids[i], " at (", i / k,
                ", ", i % k, ") is not an expert in [0, ", num_experts, ")");
      ++host_counts_[ids[i]];
    }
    if (!count_only_) {
      map_experts_to_slots(topk_ids, table_, topk_ids, token_offset);
      int32_t* out = topk_ids.data_as<int32_t>();
      for (int64_t i = 0; i < t * k; ++i) out[i] = row_of_slot_[out[i]];
    }
  } else {
#ifdef MOE_HAVE_CUDA
    SlotRoutingParams p;
    p.ids = topk_ids.data_as<int32_t>();
    p.entries = t * k;
    p.top_k = static_cast<int>(k);
    p.num_experts = num_experts;
    p.expert_slot_offsets = offsets_d_.data_as<const int32_t>();
    p.expert_slots = slots_d_.data_as<const int32_t>();
    p.token_offset = token_offset;
    p.counts = static_cast<unsigned long long*>(counts_d_.data());
    p.map = !count_only_;
    launch_slot_routing(p, static_cast<cudaStream_t>(stream));
#endif
  }
  chunk_offset_ += t;
}

void StaticLoadBalancer::on_last_chunk(void*) {}

std::vector<int64_t> StaticLoadBalancer::token_counts(void* stream) const {
  if (device_.is_cpu()) return host_counts_;
  std::vector<int64_t> counts(table_.layout().num_experts);
#ifdef MOE_HAVE_CUDA
  auto s = static_cast<cudaStream_t>(stream);
  MOE_CUDA_CHECK(cudaMemcpyAsync(counts.data(), counts_d_.data(), counts.size() * sizeof(int64_t),
                                 cudaMemcpyDeviceToHost, s));
  MOE_CUDA_CHECK(cudaStreamSynchronize(s));
#endif
  return counts;
}

void StaticLoadBalancer::reset_counts(void* stream) {
  if (device_.is_cpu()) {
    host_counts_.assign(host_counts_.size(), 0);
    return;
  }
#ifdef MOE_HAVE_CUDA
  MOE_CUDA_CHECK(
      cudaMemsetAsync(counts_d_.data(), 0, counts_d_.nbytes(), static_cast<cudaStream_t>(stream)));
#endif
}

}  // namespace moe
