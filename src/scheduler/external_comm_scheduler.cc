// ExternalCommScheduler: per chunk of at most comm.chunk_capacity(max_num_tokens) tokens
// (max_num_tokens / ep_size across ranks, so that no rank receives more than the backend's
// max_num_tokens), every rank running the same number of chunks (agree_num_chunks)
//   router -> EPLB on_routed -> [weight on input] -> quantize_input / dispatch (order by
//   supports_post_quant_dispatch; on one rank, no quantize_input for a backend that
//   quantizes inside run_moe) -> backend.run_moe -> combine -> shared experts
// with EPLB's first/last-chunk hooks around the loop.
// Partial sums: when tokens move between ranks, dispatch's expert_out is the strategy's
// wide buffer (f64 on the host, f32 on GPUs): run_moe writes each rank's partial sum there
// unrounded and combine sums the ranks' partials in a fixed order and rounds once into out.
// The shared MLP runs on the token's own rank after combine; on the host it is added to
// the combined f64 sum before that one rounding (the single-rank order: routed experts in
// k order, then shared), on GPUs it is accumulated into out in act_dtype.
#include <algorithm>
#include <memory>
#include <numeric>
#include <vector>

#include "backends/backend.h"
#include "comm/communication.h"
#include "comm/ep_plan.h"
#include "eplb/load_balancer.h"
#include "moe/errors.h"
#include "routing/router.h"
#include "scheduler/chunk_plan.h"
#include "scheduler/input_scaling.h"
#include "scheduler/scheduler.h"

namespace moe {
namespace {

/// out (act_dtype [t, H]) = wide (f64 [t, H]) rounded once.
void round_rows(const TensorView& wide, const TensorView& out) {
  std::vector<int64_t> rows(static_cast<size_t>(wide.size(0)));
  std::iota(rows.begin(), rows.end(), int64_t{0});
  sum_rows(wide, rows, out);
}

class ExternalCommScheduler final : public MoEScheduler {
 public:
  ExternalCommScheduler(const MoeConfig& config, Device device) : config_(config) {
    const int64_t max_t = config.max_num_tokens, k = config.top_k;
    topk_ids_ = Tensor::empty({max_t, k}, DType::kI32, device);                 // [T, k]
    topk_weights_ = Tensor::empty({max_t, k}, DType::kF32, device);             // [T, k]
    logits_ = Tensor::empty({max_t, config.num_experts}, DType::kF32, device);  // [T, E]
    if (config.num_shared_experts > 0 && device.is_cpu()) {
      // The combined routed sum of a chunk, unrounded, until the shared MLP is added.
      wide_sum_ = Tensor::empty({max_t, config.hidden_size}, DType::kF64, device);  // [T, H]
    }
    if (config.apply_router_weight_on_input) {
      scaled_x_ = Tensor::empty({max_t, config.hidden_size}, config.act_dtype, device);  // [T, H]
    }
  }

  void forward(ConfigurableMoE& moe, const TensorView& x, const TensorView& router_logits,
               const TensorView& out, void* stream) override {
    MoEBackend& backend = moe.backend();
    Communication& comm = moe.communication();
    Router& router = moe.router();
    LoadBalancer* eplb = moe.load_balancer();
    const bool shared = config_.num_shared_experts > 0;
    // The backend's input form: quantize_input's, or where no tokens move between ranks and
    // the backend quantizes inside run_moe (fused with its pass over the input), the rows
    // themselves.
    const bool rows_in = moe.mapping().ep_size == 1 && backend.quantizes_in_run_moe();
    auto quantized = [&](const TensorView& rows) {
      return rows_in ? QuantizedInput{rows, {}} : backend.quantize_input(rows, stream);
    };
    const bool on_input = config_.apply_router_weight_on_input;
    // With one rank and the weight applied on the output, the shared MLP rides along in the
    // routed run_moe call; otherwise it runs on this rank's own tokens after combine.
    const bool shared_in_routed_call = shared && !on_input && comm.name() == "local";

    // Lockstep: every rank runs as many chunks as the rank with the most tokens (with one
    // rank, the local count: the same chunks as without expert parallelism).
    const int64_t capacity = comm.chunk_capacity(config_.max_num_tokens);
    const int64_t local_chunks = std::max<int64_t>(1, (x.size(0) + capacity - 1) / capacity);
    const int64_t num_chunks = comm.agree_num_chunks(local_chunks, stream);

    if (eplb) eplb->on_first_chunk(stream);
    for (const Chunk& chunk : plan_chunks(x.size(0), capacity, num_chunks)) {
      const TensorView x_c = x.slice_rows(chunk.begin, chunk.end);                  // [t, H]
      const TensorView out_c = out.slice_rows(chunk.begin, chunk.end);              // [t, H]
      const TensorView ids = topk_ids_.view().slice_rows(0, chunk.size());          // [t, k]
      const TensorView weights = topk_weights_.view().slice_rows(0, chunk.size());  // [t, k]

      TensorView logits;
      if (router_logits.empty()) {
        logits = logits_.view().slice_rows(0, chunk.size());  // [t, E]
        router.compute_logits(x_c, logits, stream);
      } else {
        logits = router_logits.slice_rows(chunk.begin, chunk.end);
      }
      router.route(logits, ids, weights, stream);
      if (eplb) eplb->on_routed(ids, stream);

      TensorView input = x_c;
      if (on_input) {
        input = scaled_x_.view().slice_rows(0, chunk.size());
        apply_weight_on_input(x_c, weights, input, stream);
      }
      const RoutingView routing{ids, weights};
      comm.prepare_dispatch(routing, stream);
      DispatchResult d;
      if (comm.supports_post_quant_dispatch()) {
        d = comm.dispatch(quantized(input), routing, out_c, stream);
      } else {
        d = comm.dispatch(QuantizedInput{input, {}}, routing, out_c, stream);
        d.x = quantized(d.x.data);
      }
      RunMoeArgs args;
      args.x = d.x;
      args.topk_ids = d.routing.topk_ids;
      args.topk_weights = d.routing.topk_weights;
      args.out =
          d.expert_out;  // act_dtype (local); partial sums: f64 (host), ep_partial_dtype (GPU)
      args.with_shared = shared_in_routed_call;
      backend.run_moe(args, stream);

      const bool shared_after = shared && !shared_in_routed_call;
      // On the host the partial sums are f64: the shared MLP joins the combined sum before
      // the one rounding, as in the single-rank layer (routed experts, then shared).
      const bool shared_wide = shared_after && d.expert_out.dtype() == DType::kF64;
      const TensorView sum_c =
          shared_wide ? wide_sum_.view().slice_rows(0, chunk.size()) : out_c;  // [t, H]
      comm.combine(d.expert_out, sum_c, stream);

      if (shared_after) {
        RunMoeArgs s;
        s.x = quantized(x_c);
        s.topk_ids = ids;
        s.topk_weights = weights;
        s.out = sum_c;
        s.with_routed = false;
        s.with_shared = true;
        s.accumulate = true;
        backend.run_moe(s, stream);
        if (shared_wide) round_rows(sum_c, out_c);
      }
    }
    if (eplb) eplb->on_last_chunk(stream);
  }

 private:
  MoeConfig config_;
  Tensor topk_ids_;
  Tensor topk_weights_;
  Tensor logits_;
  Tensor scaled_x_;
  Tensor wide_sum_;  // f64 [max_num_tokens, H], host layers with shared experts only
};

}  // namespace

std::unique_ptr<MoEScheduler> make_external_comm_scheduler(const MoeConfig& config, Device device) {
  return std::make_unique<ExternalCommScheduler>(config, device);
}

}  // namespace moe
