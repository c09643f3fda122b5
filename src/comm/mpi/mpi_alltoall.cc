// alltoall over MPI (host tensors): only the tokens each rank needs, once per destination.
//   prepare_dispatch  plan_send (rows grouped by destination rank), counts by MPI_Ialltoall
//   dispatch          pack data / scales / ids / weights rows by destination, four
//                     MPI_Ialltoallv into the receive buffers (source rank order)
//   combine           the partial sums back by MPI_Ialltoallv (reverse counts), then
//                     sum_rows: per token, the destinations' partials in ascending rank order
// Buffers (sized at initialize for max_num_tokens rows): a rank sends at most
// T * min(k, ep) <= max_num_tokens rows and receives at most ep * T <= max_num_tokens.
#ifdef MOE_HAVE_MPI

#include <array>

#include "comm/mpi/mpi_communication.h"
#include "moe/errors.h"

namespace moe {
namespace {

class MpiAllToAll final : public MpiCommunication {
 public:
  using MpiCommunication::MpiCommunication;
  std::string_view name() const override { return "alltoall"; }

  void prepare_dispatch(const RoutingView& routing, void*) override {
    check_routing(routing, "prepare_dispatch");
    plan_ = plan_send(routing.topk_ids, partition_);
    tokens_ = routing.topk_ids.size(0);
    recv_counts_ = group().alltoall(plan_.counts, "alltoall: token counts exchange");
    recv_displs_ = exclusive_prefix(recv_counts_);
    prepared_ = true;
  }

  DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing, const TensorView&,
                          void*) override {
    MOE_CHECK(prepared_, "alltoall dispatch: prepare_dispatch was not called for this chunk");
    prepared_ = false;
    const PayloadLayout layout = check_payload(x, tokens_);
    const int64_t k = config_.top_k, recv = recv_displs_.back();
    // Pack the send rows, grouped by destination.
    pack_send_rows(x, routing.topk_ids, routing.topk_weights, layout, plan_, k, send_data_.data(),
                   send_scales_.data(), send_ids_.data(), send_weights_.data());

    MpiGroup& g = group();
    const std::array<std::pair<const Tensor*, const Tensor*>, 4> parts = {{
        {&send_data_, &recv_data_},
        {&send_scales_, &recv_scales_},
        {&send_ids_, &recv_ids_},
        {&send_weights_, &recv_weights_},
    }};
    const std::array<size_t, 4> row_bytes = {layout.data_row_bytes, layout.scale_row_bytes,
                                             k * sizeof(int32_t), k * sizeof(float)};
    std::array<MPI_Request, 4> requests;
    for (size_t i = 0; i < parts.size(); ++i) {
      requests[i] =
          g.ialltoallv(parts[i].first->data(), plan_.counts, plan_.offsets, parts[i].second->data(),
                       recv_counts_, recv_displs_, row_bytes[i], "alltoall dispatch");
    }
    g.wait(requests, "alltoall dispatch: tokens exchange");
    dispatched_ = true;
    return received(layout, recv, recv_data_.data(), recv_scales_.data(), x.scales,
                    recv_ids_.data(), recv_weights_.data(), expert_out_.data());
  }

  void combine(const TensorView& expert_out, const TensorView& out, void*) override {
    MOE_CHECK(dispatched_, "alltoall combine: no dispatch to combine");
    dispatched_ = false;
    check_out(out, tokens_, "combine");
    MOE_CHECK(expert_out.data() == expert_out_.data() && expert_out.size(0) == recv_displs_.back(),
              "alltoall combine: expert_out ", expert_out.str(),
              " is not the buffer dispatch returned");
    MpiGroup& g = group();
    MPI_Request request =
        g.ialltoallv(expert_out.data(), recv_counts_, recv_displs_, back_.data(), plan_.counts,
                     plan_.offsets, partial_row_bytes(), "alltoall combine");
    g.wait({&request, 1}, "alltoall combine: partial sums exchange");
    sum_rows(TensorView(back_.data(), partial_sum_dtype(true),
                        {plan_.num_rows(), int64_t{config_.hidden_size}}),  // f64 [rows, H]
             plan_.token_of_row, out);
  }

 private:
  void initialize_buffers() override {
    const int64_t rows = config_.max_num_tokens, k = config_.top_k;
    const size_t data_row = max_data_row_bytes(config_), scale_row = max_scale_row_bytes(config_);
    send_data_ = byte_rows(rows, data_row);
    send_scales_ = byte_rows(rows, scale_row);
    send_ids_ = byte_rows(rows, k * sizeof(int32_t));
    send_weights_ = byte_rows(rows, k * sizeof(float));
    recv_data_ = byte_rows(rows, data_row);
    recv_scales_ = byte_rows(rows, scale_row);
    recv_ids_ = byte_rows(rows, k * sizeof(int32_t));
    recv_weights_ = byte_rows(rows, k * sizeof(float));
    expert_out_ = byte_rows(rows, partial_row_bytes());
    back_ = byte_rows(rows, partial_row_bytes());
    for (const Tensor* t : {&send_data_, &send_scales_, &send_ids_, &send_weights_, &recv_data_,
                            &recv_scales_, &recv_ids_, &recv_weights_, &expert_out_, &back_}) {
      group().retain(*t);
    }
  }

  SendPlan plan_;
  int64_t tokens_ = 0;
  std::vector<int64_t> recv_counts_, recv_displs_;
  bool prepared_ = false, dispatched_ = false;
  Tensor send_data_, send_scales_, send_ids_, send_weights_;
  Tensor recv_data_, recv_scales_, recv_ids_, recv_weights_;
  Tensor expert_out_;  // f64 [max_num_tokens, H]: run_moe's output for received tokens
  Tensor back_;        // f64 [max_num_tokens, H]: the partials of this rank's send rows
};

}  // namespace

std::unique_ptr<Communication> make_mpi_alltoall(const MoeConfig& config, const Mapping& mapping) {
  return std::make_unique<MpiAllToAll>(config, mapping);
}

}  // namespace moe

#endif  // MOE_HAVE_MPI
