// The in-run peer of `moe bench`: cuBLAS's grouped GEMM (cublasGemmGroupedBatchedEx) doing
// the expert GEMMs of a routing, per forward:
//   FC1  [m_e, H] x [H, 2I] -> [m_e, 2I]   for every expert e with m_e > 0 tokens
//   FC2  [m_e, I] x [I, H]  -> [m_e, H]    (its input: the first I columns of FC1's output)
// plus the shared MLP (m = T, I_shared) when the layer has one; experts with the same m_e
// form one cuBLAS group. Only the GEMMs: no routing, permutation, activation or finalize,
// which the layer it is compared with does on top. Inputs rotate over the same number of
// sets as the layer's, each set with the tokens per expert of that set's routing; timed with
// the harness (L2 flushed, events), as one captured CUDA graph per set when cuBLAS allows
// the capture, else as plain stream launches (the result says which).
// Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "bench/harness/bench_math.h"
#include "bench/harness/cublas_handle.h"
#include "bench/harness/peer.h"
#include "bench/harness/timer.h"
#include "moe/config.h"
#include "moe/tensor.h"

namespace moe::bench {

class CublasGroupedPeer {
 public:
  /// Whether the peer can run this layer (bf16 / fp16 weights and activations), and why not.
  static bool supports(const MoeConfig& config, std::string& why);
  /// Device bytes of the peer's weights (every expert and the shared MLP).
  static double weight_bytes(const MoeConfig& config);
  /// Device bytes one case of `tokens` with `sets` input sets needs on top of the weights.
  static double case_bytes(const MoeConfig& config, int64_t tokens, int sets);

  /// Allocates every expert's weights on the GPU (W13 [E, 2I, H], W2 [E, H, I], shared
  /// [2 I_shared, H] and [H, I_shared]) and fills them with random values on `stream`.
  /// `cublas` must be bound to `stream` and outlive the peer.
  CublasGroupedPeer(const MoeConfig& config, cudaStream_t stream, const CublasHandle& cublas,
                    uint64_t seed);

  /// Times FC1 + FC2 of `tokens` tokens: launch i uses set i % sets, whose tokens per
  /// expert are tokens_per_expert[set] (E counts summing to T*k).
  PeerTiming time_case(int64_t tokens, const std::vector<std::vector<int>>& tokens_per_expert,
                       const TimingPlan& plan, uint64_t seed);

 private:
  MoeConfig config_;
  cudaStream_t stream_;
  const CublasHandle& cublas_;
  int device_ = 0;
  bool shared_ = false;
  Tensor w13_;         // [E, 2I, H]
  Tensor w2_;          // [E, H, I]
  Tensor shared_w13_;  // [2 I_shared, H]
  Tensor shared_w2_;   // [H, I_shared]
};

}  // namespace moe::bench
