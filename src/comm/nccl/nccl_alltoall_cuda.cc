// alltoall over NCCL: only the tokens each rank needs, once per destination rank.
//   prepare_dispatch  plan_send on the GPU (rows grouped by destination, tokens ascending);
//                     ncclAllGather of every rank's counts; the count matrix is read on the
//                     host (the one synchronisation: ncclSend/ncclRecv take host sizes)
//   dispatch          gather_rows packs data / scales / ids / weights by destination; one
//                     NCCL group of ncclSend/ncclRecv per peer and part, into receive buffers
//                     in source-rank order
//   combine           the partial sums back the same way (reverse counts), then sum_rows:
//                     per token, the destinations' partials in ascending rank order, fp32,
//                     rounded once
// Not CUDA-graph capturable (host-side counts); one_sided is.
#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

#include <array>
#include <vector>

#include "comm/nccl/ep_kernels.h"
#include "comm/nccl/nccl_communication.h"
#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe {
namespace {

class NcclAllToAll final : public NcclCommunication {
 public:
  using NcclCommunication::NcclCommunication;
  ~NcclAllToAll() override {
    if (host_counts_ != nullptr) cudaFreeHost(host_counts_);
  }
  std::string_view name() const override { return "alltoall"; }

  void prepare_dispatch(const RoutingView& routing, void* stream_ptr) override {
    check_routing(routing, "prepare_dispatch");
    NcclGroup& g = group();
    g.check_usable("alltoall prepare_dispatch");
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    const int ep = mapping_.ep_size;
    tokens_ = routing.topk_ids.size(0);
    ep::PlanSendParams plan;
    plan.topk_ids = routing.topk_ids.data_as<const int32_t>();
    plan.num_tokens = static_cast<int>(tokens_);
    plan.top_k = config_.top_k;
    plan.experts_per_rank = partition_.experts_per_rank();
    plan.ep_size = ep;
    plan.dest_mask = dest_mask_.data_as<uint64_t>();
    plan.counts = counts_.data_as<int32_t>();
    plan.offsets = offsets_.data_as<int32_t>();
    plan.token_of_row = token_of_row_.data_as<int32_t>();
    plan.row_of = row_of_.data_as<int32_t>();
    ep::launch_plan_send(plan, stream);
    g.finish(ncclAllGather(counts_.data(), count_matrix_.data(), ep, ncclInt32, g.comm(), stream),
             "alltoall prepare_dispatch: ncclAllGather of the counts");
    MOE_CUDA_CHECK(cudaMemcpyAsync(host_counts_, count_matrix_.data(), sizeof(int32_t) * ep * ep,
                                   cudaMemcpyDeviceToHost, stream));
    g.wait_stream(stream, "alltoall prepare_dispatch: counts exchange");
    // host_counts_[s * ep + d]: rows rank s sends to rank d.
    const int me = mapping_.ep_rank;
    send_counts_.assign(ep, 0);
    recv_counts_.assign(ep, 0);
    for (int d = 0; d < ep; ++d) send_counts_[d] = host_counts_[me * ep + d];
    for (int s = 0; s < ep; ++s) recv_counts_[s] = host_counts_[s * ep + me];
    send_displs_ = exclusive_prefix(send_counts_);
    recv_displs_ = exclusive_prefix(recv_counts_);
    prepared_ = true;
  }

  DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing, const TensorView&,
                          void* stream_ptr) override {
    MOE_CHECK(prepared_, "alltoall dispatch: prepare_dispatch was not called for this chunk");
    prepared_ = false;
    const PayloadLayout layout = check_payload(x, tokens_);
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    const int64_t k = config_.top_k;
    const std::array<size_t, 4> row_bytes = {layout.data_row_bytes, layout.scale_row_bytes,
                                             k * sizeof(int32_t), k * sizeof(float)};
    const std::array<const void*, 4> src = {x.data.data(), x.scales.data(), routing.topk_ids.data(),
                                            routing.topk_weights.data()};
    const std::array<Tensor*, 4> send = {&send_data_, &send_scales_, &send_ids_, &send_weights_};
    const std::array<Tensor*, 4> recv = {&recv_data_, &recv_scales_, &recv_ids_, &recv_weights_};
    ep::GatherRowsParams pack;
    for (size_t i = 0; i < 4; ++i) {
      pack.parts[i] = {src[i], send[i]->data(), row_bytes[i]};
    }
    pack.src_row = token_of_row_.data_as<int32_t>();
    pack.num_rows = offsets_.data_as<int32_t>() + mapping_.ep_size;
    pack.max_rows = static_cast<int>(send_displs_.back());
    ep::launch_gather_rows(pack, stream);
    exchange(send, recv, row_bytes, send_counts_, send_displs_, recv_counts_, recv_displs_, stream,
             "alltoall dispatch: ncclSend/ncclRecv of the tokens");
    dispatched_ = true;
    return received(layout, recv_displs_.back(), recv_data_.data(), recv_scales_.data(), x.scales,
                    recv_ids_.data(), recv_weights_.data(), expert_out_.data());
  }

  void combine(const TensorView& expert_out, const TensorView& out, void* stream_ptr) override {
    MOE_CHECK(dispatched_, "alltoall combine: no dispatch to combine");
    dispatched_ = false;
    check_out(out, tokens_, "combine");
    MOE_CHECK(expert_out.data() == expert_out_.data() && expert_out.size(0) == recv_displs_.back(),
              "alltoall combine: expert_out ", expert_out.str(),
              " is not the buffer dispatch returned");
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    const size_t row = partial_row_bytes();
    const std::array<Tensor*, 4> send = {&expert_out_, nullptr, nullptr, nullptr};
    const std::array<Tensor*, 4> recv = {&back_, nullptr, nullptr, nullptr};
    exchange(send, recv, {row, 0, 0, 0}, recv_counts_, recv_displs_, send_counts_, send_displs_,
             stream, "alltoall combine: ncclSend/ncclRecv of the partial sums");
    ep::SumRowsParams sum;
    sum.partial = back_.data();
    sum.f32_partial = config_.ep_partial_dtype == DType::kF32;
    sum.row_of = row_of_.data_as<int32_t>();
    sum.out = out.data();
    sum.num_tokens = static_cast<int>(tokens_);
    sum.ep_size = mapping_.ep_size;
    sum.hidden = config_.hidden_size;
    ep::launch_sum_rows(sum, config_.act_dtype, stream);
  }

 private:
  /// One NCCL group: for every peer, send rows [send_displs[d], +send_counts[d]) of each
  /// part and receive rows [recv_displs[s], +recv_counts[s]).
  void exchange(const std::array<Tensor*, 4>& send, const std::array<Tensor*, 4>& recv,
                const std::array<size_t, 4>& row_bytes, const std::vector<int64_t>& send_counts,
                const std::vector<int64_t>& send_displs, const std::vector<int64_t>& recv_counts,
                const std::vector<int64_t>& recv_displs, cudaStream_t stream,
                std::string_view what) {
    NcclGroup& g = group();
    g.check_usable(what);
    g.finish(ncclGroupStart(), what);
    for (int peer = 0; peer < mapping_.ep_size; ++peer) {
      for (size_t i = 0; i < 4; ++i) {
        if (row_bytes[i] == 0) continue;
        auto* s = static_cast<uint8_t*>(send[i]->data());
        auto* r = static_cast<uint8_t*>(recv[i]->data());
        if (send_counts[peer] > 0) {
          g.finish(ncclSend(s + send_displs[peer] * row_bytes[i], send_counts[peer] * row_bytes[i],
                            ncclUint8, peer, g.comm(), stream),
                   what);
        }
        if (recv_counts[peer] > 0) {
          g.finish(ncclRecv(r + recv_displs[peer] * row_bytes[i], recv_counts[peer] * row_bytes[i],
                            ncclUint8, peer, g.comm(), stream),
                   what);
        }
      }
    }
    g.finish(ncclGroupEnd(), what);
  }

  void initialize_buffers() override {
    const int64_t rows = config_.max_num_tokens, k = config_.top_k, ep = mapping_.ep_size;
    const int64_t cap = chunk_capacity(config_.max_num_tokens);
    const size_t data_row = max_data_row_bytes(config_), scale_row = max_scale_row_bytes(config_);
    dest_mask_ = device_rows(cap, sizeof(uint64_t));
    counts_ = device_rows(ep, sizeof(int32_t));
    offsets_ = device_rows(ep + 1, sizeof(int32_t));
    count_matrix_ = device_rows(ep * ep, sizeof(int32_t));
    token_of_row_ = device_rows(rows, sizeof(int32_t));
    row_of_ = device_rows(cap * ep, sizeof(int32_t));
    send_data_ = device_rows(rows, data_row);
    send_scales_ = device_rows(rows, scale_row);
    send_ids_ = device_rows(rows, k * sizeof(int32_t));
    send_weights_ = device_rows(rows, k * sizeof(float));
    recv_data_ = device_rows(rows, data_row);
    recv_scales_ = device_rows(rows, scale_row);
    recv_ids_ = device_rows(rows, k * sizeof(int32_t));
    recv_weights_ = device_rows(rows, k * sizeof(float));
    expert_out_ = device_rows(rows, partial_row_bytes());
    back_ = device_rows(rows, partial_row_bytes());
    MOE_CUDA_CHECK(cudaMallocHost(&host_counts_, sizeof(int32_t) * ep * ep));
  }

  int64_t tokens_ = 0;
  bool prepared_ = false, dispatched_ = false;
  std::vector<int64_t> send_counts_, send_displs_, recv_counts_, recv_displs_;
  int32_t* host_counts_ = nullptr;  // pinned [ep, ep]
  Tensor dest_mask_, counts_, offsets_, count_matrix_, token_of_row_, row_of_;
  Tensor send_data_, send_scales_, send_ids_, send_weights_;
  Tensor recv_data_, recv_scales_, recv_ids_, recv_weights_;
  Tensor expert_out_;  // f32 [max_num_tokens, H]: run_moe's output for received rows
  Tensor back_;        // f32 [max_num_tokens, H]: the partials of my send rows
};

}  // namespace

std::unique_ptr<Communication> make_nccl_alltoall(const MoeConfig& config, const Mapping& mapping) {
  return std::make_unique<NcclAllToAll>(config, mapping);
}

}  // namespace moe

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI
