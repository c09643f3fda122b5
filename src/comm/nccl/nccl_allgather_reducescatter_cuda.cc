// allgather_reducescatter over NCCL: every rank computes its experts' share of every token.
//   prepare_dispatch  the ranks' token counts, agreed on the host over MPI (no GPU
//                     synchronisation); T_max = the largest
//   dispatch          my rows are copied into my block of the receive buffers (block r =
//                     rows [r * T_max, (r + 1) * T_max)), then in-place ncclAllGather of
//                     data / scales / ids / weights; pad_rows marks the rows past each
//                     rank's count with an expert this rank does not own and weight 0, so no
//                     backend computes them
//   combine           ncclReduceScatter (f32 sum) of the f32 partials [ep * T_max, H]: block
//                     r lands on rank r; its first T_r rows, rounded once, are the output
// NOTE: NCCL sums in its ring order (fixed for a given communicator) in f32; the partials
// are never rounded to act_dtype before the one final rounding (unless ep_partial_dtype is
// act_dtype: then NCCL reduces in act_dtype).
#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

#include <array>
#include <vector>

#include "comm/nccl/ep_kernels.h"
#include "comm/nccl/nccl_communication.h"
#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe {
namespace {

ncclDataType_t nccl_type(DType dtype) { return dtype == DType::kBF16 ? ncclBfloat16 : ncclFloat16; }

class NcclAllgatherReduceScatter final : public NcclCommunication {
 public:
  using NcclCommunication::NcclCommunication;
  std::string_view name() const override { return "allgather_reducescatter"; }

  void prepare_dispatch(const RoutingView& routing, void*) override {
    check_routing(routing, "prepare_dispatch");
    group().check_usable("allgather_reducescatter prepare_dispatch");
    tokens_ = routing.topk_ids.size(0);
    counts_ = group().host().allgather(tokens_, "allgather_reducescatter: token counts exchange");
    block_rows_ = 0;
    for (int64_t c : counts_) block_rows_ = std::max(block_rows_, c);
    prepared_ = true;
  }

  DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing, const TensorView&,
                          void* stream_ptr) override {
    MOE_CHECK(prepared_, "allgather_reducescatter dispatch: prepare_dispatch was not called");
    prepared_ = false;
    const PayloadLayout layout = check_payload(x, tokens_);
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    NcclGroup& g = group();
    const int me = mapping_.ep_rank, ep = mapping_.ep_size;
    const int64_t k = config_.top_k, total = ep * block_rows_;
    const std::array<size_t, 4> row_bytes = {layout.data_row_bytes, layout.scale_row_bytes,
                                             k * sizeof(int32_t), k * sizeof(float)};
    const std::array<const void*, 4> src = {x.data.data(), x.scales.data(), routing.topk_ids.data(),
                                            routing.topk_weights.data()};
    const std::array<Tensor*, 4> recv = {&recv_data_, &recv_scales_, &recv_ids_, &recv_weights_};
    for (size_t i = 0; i < 4; ++i) {
      if (row_bytes[i] == 0 || tokens_ == 0) continue;
      auto* mine = static_cast<uint8_t*>(recv[i]->data()) + me * block_rows_ * row_bytes[i];
      MOE_CUDA_CHECK(
          cudaMemcpyAsync(mine, src[i], tokens_ * row_bytes[i], cudaMemcpyDeviceToDevice, stream));
    }
    if (block_rows_ > 0) {
      const char* what = "allgather_reducescatter dispatch: ncclAllGather of the tokens";
      g.finish(ncclGroupStart(), what);
      for (size_t i = 0; i < 4; ++i) {
        if (row_bytes[i] == 0) continue;
        auto* base = static_cast<uint8_t*>(recv[i]->data());
        g.finish(ncclAllGather(base + me * block_rows_ * row_bytes[i], base,
                               block_rows_ * row_bytes[i], ncclUint8, g.comm(), stream),
                 what);
      }
      g.finish(ncclGroupEnd(), what);
      ep::PadRowsParams pad;
      pad.ids = recv_ids_.data_as<int32_t>();
      pad.weights = recv_weights_.data_as<float>();
      pad.top_k = config_.top_k;
      pad.rows_per_block = static_cast<int>(block_rows_);
      pad.num_blocks = ep;
      pad.foreign_expert = partition_.foreign_expert(me);
      for (int r = 0; r < ep; ++r) pad.valid[r] = static_cast<int32_t>(counts_[r]);
      ep::launch_pad_rows(pad, stream);
    }
    dispatched_ = true;
    return received(layout, total, recv_data_.data(), recv_scales_.data(), x.scales,
                    recv_ids_.data(), recv_weights_.data(), expert_out_.data());
  }

  void combine(const TensorView& expert_out, const TensorView& out, void* stream_ptr) override {
    MOE_CHECK(dispatched_, "allgather_reducescatter combine: no dispatch to combine");
    dispatched_ = false;
    check_out(out, tokens_, "combine");
    MOE_CHECK(expert_out.data() == expert_out_.data() &&
                  expert_out.size(0) == mapping_.ep_size * block_rows_,
              "allgather_reducescatter combine: expert_out ", expert_out.str(),
              " is not the buffer dispatch returned");
    if (block_rows_ == 0) return;
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    NcclGroup& g = group();
    const size_t count = block_rows_ * config_.hidden_size;
    // f32 partials are reduced in f32 into my block, then rounded once into out; act_dtype
    // partials (ep_partial_dtype) are reduced in act_dtype (NCCL rounds after each hop of its
    // ring: once with two ranks) straight into out's type.
    const bool wide = config_.ep_partial_dtype == DType::kF32;
    const ncclDataType_t type =
        wide ? ncclFloat32 : (config_.act_dtype == DType::kBF16 ? ncclBfloat16 : ncclFloat16);
    g.finish(ncclReduceScatter(expert_out.data(), reduced_.data(), count, type, ncclSum, g.comm(),
                               stream),
             "allgather_reducescatter combine: ncclReduceScatter of the partial sums");
    if (wide) {
      ep::launch_round_rows(reduced_.data_as<float>(), out.data(), tokens_ * config_.hidden_size,
                            config_.act_dtype, stream);
    } else {
      MOE_CUDA_CHECK(cudaMemcpyAsync(out.data(), reduced_.data(),
                                     dtype_bytes(config_.act_dtype, tokens_ * config_.hidden_size),
                                     cudaMemcpyDeviceToDevice, stream),
                     "allgather_reducescatter combine: copying the reduced rows");
    }
  }

 private:
  void initialize_buffers() override {
    const int64_t rows = config_.max_num_tokens, k = config_.top_k;
    const size_t data_row = max_data_row_bytes(config_);
    recv_data_ = device_rows(rows, data_row);
    recv_scales_ = device_rows(rows, max_scale_row_bytes(config_));
    recv_ids_ = device_rows(rows, k * sizeof(int32_t));
    recv_weights_ = device_rows(rows, k * sizeof(float));
    expert_out_ = device_rows(rows, partial_row_bytes());
    reduced_ = device_rows(chunk_capacity(config_.max_num_tokens), partial_row_bytes());
  }

  int64_t tokens_ = 0;
  int64_t block_rows_ = 0;       // T_max: rows of each rank's block
  std::vector<int64_t> counts_;  // [ep] every rank's tokens
  bool prepared_ = false, dispatched_ = false;
  Tensor recv_data_, recv_scales_, recv_ids_, recv_weights_;
  Tensor expert_out_;  // f32 [max_num_tokens, H]: partial sums, unrounded
  Tensor reduced_;     // f32 [T_max, H]: my block of the reduce-scatter
};

}  // namespace

std::unique_ptr<Communication> make_nccl_allgather_reducescatter(const MoeConfig& config,
                                                                 const Mapping& mapping) {
  return std::make_unique<NcclAllgatherReduceScatter>(config, mapping);
}

}  // namespace moe

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI
