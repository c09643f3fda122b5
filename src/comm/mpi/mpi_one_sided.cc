// one_sided over MPI RMA (host tensors): the CPU twin of the NCCL symmetric-memory strategy.
// Every rank exposes one window (MPI_Win_allocate, passive target, MPI_Win_lock_all for the
// window's life) with sections
//   counts [ep] i64 | data [max, H] | scales [max, S] | ids [max, k] | weights [max, k] |
//   out [max, H] f64 (partial sums, unrounded)
// and the steps are
//   prepare_dispatch  put my count for rank d into d's counts[me]; flush; barrier 1;
//                     get every d's counts: my rows land in d at sum of counts[s < me]
//   dispatch          pack my rows for d and put them straight into d's sections at that
//                     offset; flush; barrier 2: my sections hold every source's tokens,
//                     contiguous, in source order -- run_moe reads them in place and writes
//                     its partial sums into my out section
//   combine           barrier 3 (every rank's run_moe is done); get my rows' partials from
//                     every d's out section; sum them per token in ascending rank order
// NOTE: the three barriers also keep the next chunk's puts out of a window its owner is
// still reading: a rank's puts of chunk i+1 follow barrier 3 of chunk i, which its peers
// reach only after run_moe of chunk i.
// Barriers are MPI_Ibarrier waited on with the comm timeout; puts and gets complete with
// MPI_Win_flush_all before each barrier, and MPI_Win_sync makes them visible to local loads.
#ifdef MOE_HAVE_MPI

#include <array>

#include "comm/mpi/mpi_communication.h"
#include "moe/errors.h"

namespace moe {
namespace {

constexpr size_t kSectionAlign = 64;

size_t align_up(size_t n) { return (n + kSectionAlign - 1) / kSectionAlign * kSectionAlign; }

class MpiOneSided final : public MpiCommunication {
 public:
  using MpiCommunication::MpiCommunication;
  std::string_view name() const override { return "one_sided"; }

  ~MpiOneSided() override {
    if (window_ == MPI_WIN_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Win_unlock_all(window_);
    // NOTE: MPI_Win_free is collective; a broken group skips it (peers may be gone) and
    // leaves the window to the process's exit.
    try {
      group().check_usable("one_sided: window release");
      MPI_Win_free(&window_);
    } catch (const Error&) {
    }
  }

  void prepare_dispatch(const RoutingView& routing, void*) override {
    check_routing(routing, "prepare_dispatch");
    const int ep = mapping_.ep_size, me = mapping_.ep_rank;
    MpiGroup& g = group();
    plan_ = plan_send(routing.topk_ids, partition_);
    tokens_ = routing.topk_ids.size(0);
    for (int d = 0; d < ep; ++d) {
      g.check(MPI_Put(&plan_.counts[d], 1, MPI_INT64_T, d, counts_at_ + me * sizeof(int64_t), 1,
                      MPI_INT64_T, window_),
              "one_sided prepare_dispatch: MPI_Put of the count");
    }
    g.check(MPI_Win_flush_all(window_), "one_sided prepare_dispatch: MPI_Win_flush_all");
    g.barrier("one_sided prepare_dispatch: barrier after the counts");
    g.check(MPI_Win_sync(window_), "one_sided prepare_dispatch: MPI_Win_sync");
    const auto* mine = reinterpret_cast<const int64_t*>(base_ + counts_at_);
    recv_rows_ = 0;
    for (int s = 0; s < ep; ++s) recv_rows_ += mine[s];
    // Where my rows go in each destination: after the rows of lower source ranks.
    peer_counts_.assign(static_cast<size_t>(ep) * ep, 0);
    for (int d = 0; d < ep; ++d) {
      g.check(
          MPI_Get(&peer_counts_[d * ep], ep, MPI_INT64_T, d, counts_at_, ep, MPI_INT64_T, window_),
          "one_sided prepare_dispatch: MPI_Get of the counts");
    }
    g.check(MPI_Win_flush_all(window_), "one_sided prepare_dispatch: MPI_Win_flush_all");
    dest_offset_.assign(ep, 0);
    for (int d = 0; d < ep; ++d) {
      for (int s = 0; s < me; ++s) dest_offset_[d] += peer_counts_[d * ep + s];
      MOE_CHECK(peer_counts_[d * ep + me] == plan_.counts[d], "one_sided prepare_dispatch: rank ",
                d, " holds count ", peer_counts_[d * ep + me], " from rank ", me, ", which sent ",
                plan_.counts[d]);
    }
    prepared_ = true;
  }

  DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing, const TensorView&,
                          void*) override {
    MOE_CHECK(prepared_, "one_sided dispatch: prepare_dispatch was not called for this chunk");
    prepared_ = false;
    const PayloadLayout layout = check_payload(x, tokens_);
    const int64_t k = config_.top_k;
    pack_send_rows(x, routing.topk_ids, routing.topk_weights, layout, plan_, k, send_data_.data(),
                   send_scales_.data(), send_ids_.data(), send_weights_.data());
    const std::array<std::pair<const Tensor*, size_t>, 4> parts = {{
        {&send_data_, data_at_},
        {&send_scales_, scales_at_},
        {&send_ids_, ids_at_},
        {&send_weights_, weights_at_},
    }};
    const std::array<size_t, 4> row_bytes = {layout.data_row_bytes, layout.scale_row_bytes,
                                             k * sizeof(int32_t), k * sizeof(float)};
    MpiGroup& g = group();
    for (int d = 0; d < mapping_.ep_size; ++d) {
      if (plan_.counts[d] == 0) continue;
      for (size_t i = 0; i < parts.size(); ++i) {
        if (row_bytes[i] == 0) continue;
        MPI_Datatype row = g.row_type(row_bytes[i]);
        const auto* src = static_cast<const uint8_t*>(parts[i].first->data());
        g.check(MPI_Put(src + plan_.offsets[d] * row_bytes[i], static_cast<int>(plan_.counts[d]),
                        row, d, parts[i].second + dest_offset_[d] * row_bytes[i],
                        static_cast<int>(plan_.counts[d]), row, window_),
                "one_sided dispatch: MPI_Put of the tokens");
      }
    }
    g.check(MPI_Win_flush_all(window_), "one_sided dispatch: MPI_Win_flush_all");
    g.barrier("one_sided dispatch: barrier after the tokens");
    g.check(MPI_Win_sync(window_), "one_sided dispatch: MPI_Win_sync");
    dispatched_ = true;
    return received(layout, recv_rows_, base_ + data_at_, base_ + scales_at_, x.scales,
                    base_ + ids_at_, base_ + weights_at_, base_ + out_at_);
  }

  void combine(const TensorView& expert_out, const TensorView& out, void*) override {
    MOE_CHECK(dispatched_, "one_sided combine: no dispatch to combine");
    dispatched_ = false;
    check_out(out, tokens_, "combine");
    MOE_CHECK(expert_out.data() == base_ + out_at_ && expert_out.size(0) == recv_rows_,
              "one_sided combine: expert_out ", expert_out.str(),
              " is not the window section dispatch returned");
    MpiGroup& g = group();
    g.check(MPI_Win_sync(window_), "one_sided combine: MPI_Win_sync");
    g.barrier("one_sided combine: barrier after run_moe");
    const size_t row_bytes = partial_row_bytes();
    MPI_Datatype row = g.row_type(row_bytes);
    auto* back = static_cast<uint8_t*>(back_.data());
    for (int d = 0; d < mapping_.ep_size; ++d) {
      if (plan_.counts[d] == 0) continue;
      g.check(MPI_Get(back + plan_.offsets[d] * row_bytes, static_cast<int>(plan_.counts[d]), row,
                      d, out_at_ + dest_offset_[d] * row_bytes, static_cast<int>(plan_.counts[d]),
                      row, window_),
              "one_sided combine: MPI_Get of the partial sums");
    }
    g.check(MPI_Win_flush_all(window_), "one_sided combine: MPI_Win_flush_all");
    sum_rows(TensorView(back_.data(), partial_sum_dtype(true),
                        {plan_.num_rows(), int64_t{config_.hidden_size}}),  // f64 [rows, H]
             plan_.token_of_row, out);
  }

 private:
  void initialize_buffers() override {
    const int64_t rows = config_.max_num_tokens, k = config_.top_k;
    const size_t data_row = max_data_row_bytes(config_), scale_row = max_scale_row_bytes(config_);
    size_t at = 0;
    auto section = [&at](size_t bytes) {
      const size_t begin = at;
      at = align_up(at + bytes);
      return begin;
    };
    counts_at_ = section(mapping_.ep_size * sizeof(int64_t));
    data_at_ = section(rows * data_row);
    scales_at_ = section(rows * scale_row);
    ids_at_ = section(rows * k * sizeof(int32_t));
    weights_at_ = section(rows * k * sizeof(float));
    out_at_ = section(rows * partial_row_bytes());
    MpiGroup& g = group();
    // NOTE: ranks that share a node get a shared-memory window (osc/sm): OpenMPI 4.1's
    // osc/rdma names its shared segments after the communicator's context id, which
    // concurrent EP groups split from one world share, so their windows collide.
    MPI_Comm node = MPI_COMM_NULL;
    g.check(MPI_Comm_split_type(g.comm(), MPI_COMM_TYPE_SHARED, g.rank(), MPI_INFO_NULL, &node),
            "one_sided: MPI_Comm_split_type");
    int node_size = 0;
    MPI_Comm_size(node, &node_size);
    MPI_Comm_free(&node);
    void* base = nullptr;
    const MPI_Aint bytes = static_cast<MPI_Aint>(at);
    g.check(node_size == g.size()
                ? MPI_Win_allocate_shared(bytes, 1, MPI_INFO_NULL, g.comm(), &base, &window_)
                : MPI_Win_allocate(bytes, 1, MPI_INFO_NULL, g.comm(), &base, &window_),
            "one_sided: window of " + std::to_string(at) + " bytes");
    base_ = static_cast<uint8_t*>(base);
    g.check(MPI_Win_set_errhandler(window_, MPI_ERRORS_RETURN), "one_sided: window errhandler");
    g.check(MPI_Win_lock_all(MPI_MODE_NOCHECK, window_), "one_sided: MPI_Win_lock_all");
    send_data_ = byte_rows(rows, data_row);
    send_scales_ = byte_rows(rows, scale_row);
    send_ids_ = byte_rows(rows, k * sizeof(int32_t));
    send_weights_ = byte_rows(rows, k * sizeof(float));
    back_ = byte_rows(rows, partial_row_bytes());
    for (const Tensor* t : {&send_data_, &send_scales_, &send_ids_, &send_weights_, &back_}) {
      g.retain(*t);
    }
  }

  MPI_Win window_ = MPI_WIN_NULL;
  uint8_t* base_ = nullptr;  // my window
  size_t counts_at_ = 0, data_at_ = 0, scales_at_ = 0, ids_at_ = 0, weights_at_ = 0, out_at_ = 0;
  SendPlan plan_;
  int64_t tokens_ = 0;
  int64_t recv_rows_ = 0;
  std::vector<int64_t> peer_counts_;  // [ep, ep]: counts[s] held by each rank d
  std::vector<int64_t> dest_offset_;  // [ep]: first row of mine in rank d's sections
  bool prepared_ = false, dispatched_ = false;
  Tensor send_data_, send_scales_, send_ids_, send_weights_;
  Tensor back_;  // f64 [max_num_tokens, H]: the partials of my send rows
};

}  // namespace

std::unique_ptr<Communication> make_mpi_one_sided(const MoeConfig& config, const Mapping& mapping) {
  return std::make_unique<MpiOneSided>(config, mapping);
}

}  // namespace moe

#endif  // MOE_HAVE_MPI
