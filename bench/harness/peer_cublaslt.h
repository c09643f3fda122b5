// The in-run peer of `moe bench` for fp8 weights: cuBLASLt's e4m3 matmul, one per expert
// (cuBLAS's grouped GEMM has no e4m3 or block-scaled mode), doing the expert GEMMs of a
// routing, per forward:
//   FC1  [m_e, H] x [H, 2I] -> [m_e, 2I] bf16   for every expert e with m_e > 0 tokens
//   FC2  [m_e, I] x [I, H]  -> [m_e, H] bf16
// plus the shared MLP (m = T) when the layer has one. fp8_block: weights in 128x128 blocks
// (BLK128x128_32F), activations in 1x128 groups (VEC128_32F), f32 scales; fp8_per_tensor:
// one f32 scale per weight and per activation tensor. Each expert's rows are padded to a
// multiple of 4 (cuBLASLt's block-scaled rule; at most 3 rows an expert). Each GEMM runs
// the first valid algorithm of cuBLASLt's heuristic at its exact row count (the dense
// backend's LtGemm planned for that one count). Only the GEMMs: the activations and their
// scales are random e4m3 / f32 inputs (FC2's too), with no routing, permutation, activation,
// quantization or finalize, which the layer compared with does on top. Timed as the
// cuBLAS peer (peer.h: one captured CUDA graph per input set).
// Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/dense/dense_gemm.h"
#include "bench/harness/peer.h"
#include "moe/config.h"
#include "moe/tensor.h"

namespace moe::bench {

class CublasLtPeer {
 public:
  /// Whether the peer can run this layer (fp8_block / fp8_per_tensor weights, bf16
  /// activations, H and I multiples of 16), and why not.
  static bool supports(const MoeConfig& config, std::string& why);
  /// Device bytes of the peer's weights and their scales (every expert and the shared MLP).
  static double weight_bytes(const MoeConfig& config);
  /// Device bytes one case of `tokens` with `sets` input sets needs on top of the weights.
  static double case_bytes(const MoeConfig& config, int64_t tokens, int sets);

  /// Allocates every expert's e4m3 weights and their f32 scales on the GPU and fills them
  /// with random values on `stream`.
  CublasLtPeer(const MoeConfig& config, cudaStream_t stream, uint64_t seed);
  ~CublasLtPeer();

  /// Times FC1 + FC2 of `tokens` tokens: launch i uses set i % sets, whose tokens per
  /// expert are tokens_per_expert[set] (E counts summing to T*k).
  PeerTiming time_case(int64_t tokens, const std::vector<std::vector<int>>& tokens_per_expert,
                       const TimingPlan& plan, uint64_t seed);

 private:
  struct Weights {
    Tensor w13, w13_scales;  // e4m3 [E, 2I, H]; f32 block [E, 2I/128, ld(H/128)] or [E]
    Tensor w2, w2_scales;    // e4m3 [E, H, I];  f32 block [E, H/128, ld(I/128)] or [E]
  };
  /// A GEMM's descriptor (block or per-tensor scaling, e4m3 -> bf16) for m rows.
  dense::GemmDesc gemm_desc(const std::string& name, int64_t n, int64_t k, int64_t m) const;

  MoeConfig config_;
  cudaStream_t stream_;
  int device_ = 0;
  bool block_ = true;  // fp8_block (else fp8_per_tensor)
  bool shared_ = false;
  Weights routed_;    // E experts
  Weights shared_w_;  // one expert: the shared MLP
  std::unique_ptr<dense::LtHandle> lt_;
  Tensor workspace_;  // cuBLASLt's, u8
  /// Planned GEMMs by (fc1 / fc2 / shared fc1 / shared fc2, padded rows), kept across cases.
  std::map<std::pair<int, int64_t>, std::unique_ptr<dense::LtGemm>> gemms_;
};

}  // namespace moe::bench
