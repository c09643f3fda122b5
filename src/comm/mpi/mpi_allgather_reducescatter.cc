// allgather_reducescatter over MPI (host tensors): every rank computes its experts' share
// of every token.
//   prepare_dispatch  the ranks' token counts (MPI_Iallgather)
//   dispatch          MPI_Iallgatherv of data / scales / ids / weights: all tokens, in rank
//                     order, in the receive buffers
//   combine           reduce-scatter as an exchange plus a fixed-order sum: rank s sends
//                     rows [offset_r, offset_r + T_r) of its partial sums to rank r
//                     (MPI_Ialltoallv), and rank r sums the ep blocks in ascending rank
//                     order (sum_rows), f64 partials rounded once. MPI_Reduce_scatter would
//                     leave the summation order to the MPI library; this keeps it fixed.
// Buffers: all ranks' tokens <= ep * (max_num_tokens / ep) <= max_num_tokens rows.
#ifdef MOE_HAVE_MPI

#include <array>

#include "comm/mpi/mpi_communication.h"
#include "moe/errors.h"

namespace moe {
namespace {

class MpiAllgatherReduceScatter final : public MpiCommunication {
 public:
  using MpiCommunication::MpiCommunication;
  std::string_view name() const override { return "allgather_reducescatter"; }

  void prepare_dispatch(const RoutingView& routing, void*) override {
    check_routing(routing, "prepare_dispatch");
    tokens_ = routing.topk_ids.size(0);
    counts_ = group().allgather(tokens_, "allgather_reducescatter: token counts exchange");
    displs_ = exclusive_prefix(counts_);
    prepared_ = true;
  }

  DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing, const TensorView&,
                          void*) override {
    MOE_CHECK(prepared_, "allgather_reducescatter dispatch: prepare_dispatch was not called");
    prepared_ = false;
    const PayloadLayout layout = check_payload(x, tokens_);
    const int64_t k = config_.top_k, total = displs_.back();
    MpiGroup& g = group();
    const std::array<std::pair<const void*, const Tensor*>, 4> parts = {{
        {x.data.data(), &recv_data_},
        {x.scales.data(), &recv_scales_},
        {routing.topk_ids.data(), &recv_ids_},
        {routing.topk_weights.data(), &recv_weights_},
    }};
    const std::array<size_t, 4> row_bytes = {layout.data_row_bytes, layout.scale_row_bytes,
                                             k * sizeof(int32_t), k * sizeof(float)};
    std::array<MPI_Request, 4> requests;
    for (size_t i = 0; i < parts.size(); ++i) {
      requests[i] = g.iallgatherv(parts[i].first, tokens_, parts[i].second->data(), counts_,
                                  displs_, row_bytes[i], "allgather_reducescatter dispatch");
    }
    g.wait(requests, "allgather_reducescatter dispatch: all-gather of the tokens");
    dispatched_ = true;
    return received(layout, total, recv_data_.data(), recv_scales_.data(), x.scales,
                    recv_ids_.data(), recv_weights_.data(), expert_out_.data());
  }

  void combine(const TensorView& expert_out, const TensorView& out, void*) override {
    MOE_CHECK(dispatched_, "allgather_reducescatter combine: no dispatch to combine");
    dispatched_ = false;
    check_out(out, tokens_, "combine");
    MOE_CHECK(expert_out.data() == expert_out_.data() && expert_out.size(0) == displs_.back(),
              "allgather_reducescatter combine: expert_out ", expert_out.str(),
              " is not the buffer dispatch returned");
    const int ep = mapping_.ep_size;
    // Every rank s sends me my block of its partials; they land in source order.
    const std::vector<int64_t> recv_counts(ep, tokens_);
    std::vector<int64_t> recv_displs(ep);
    for (int s = 0; s < ep; ++s) recv_displs[s] = s * tokens_;
    MpiGroup& g = group();
    MPI_Request request =
        g.ialltoallv(expert_out.data(), counts_, displs_, back_.data(), recv_counts, recv_displs,
                     partial_row_bytes(), "allgather_reducescatter combine");
    g.wait({&request, 1}, "allgather_reducescatter combine: reduce-scatter of the partial sums");
    std::vector<int64_t> token_of_row(static_cast<size_t>(ep * tokens_));
    for (size_t i = 0; i < token_of_row.size(); ++i) token_of_row[i] = i % tokens_;
    sum_rows(TensorView(back_.data(), partial_sum_dtype(true),
                        {ep * tokens_, int64_t{config_.hidden_size}}),  // f64 [ep * T, H]
             token_of_row, out);
  }

 private:
  void initialize_buffers() override {
    const int64_t rows = config_.max_num_tokens, k = config_.top_k;
    const size_t data_row = max_data_row_bytes(config_);
    recv_data_ = byte_rows(rows, data_row);
    recv_scales_ = byte_rows(rows, max_scale_row_bytes(config_));
    recv_ids_ = byte_rows(rows, k * sizeof(int32_t));
    recv_weights_ = byte_rows(rows, k * sizeof(float));
    expert_out_ = byte_rows(rows, partial_row_bytes());
    back_ = byte_rows(rows, partial_row_bytes());
    for (const Tensor* t :
         {&recv_data_, &recv_scales_, &recv_ids_, &recv_weights_, &expert_out_, &back_}) {
      group().retain(*t);
    }
  }

  int64_t tokens_ = 0;
  std::vector<int64_t> counts_, displs_;  // [ep], [ep + 1]: every rank's tokens
  bool prepared_ = false, dispatched_ = false;
  Tensor recv_data_, recv_scales_, recv_ids_, recv_weights_;
  Tensor expert_out_;  // f64 [max_num_tokens, H]
  Tensor back_;        // f64 [ep * T, H]: my block of every rank's partials
};

}  // namespace

std::unique_ptr<Communication> make_mpi_allgather_reducescatter(const MoeConfig& config,
                                                                const Mapping& mapping) {
  return std::make_unique<MpiAllgatherReduceScatter>(config, mapping);
}

}  // namespace moe

#endif  // MOE_HAVE_MPI
