// The grouped GEMM's e4m3 variants (grouped_gemm_launch.cuh): per-tensor scaling (FC1 writes
// e4m3, FC2 the activation type; prefill on the tokens-on-M tiles without promotion) and 128-block
// scaling (bf16 outputs, block_n <= 192; 2-CTA cluster variants of the prefill tiles,
// MOE_GROUPED_CLUSTER=2; FC1 on the tokens-on-M tiles and on the tokens-on-N ones up to
// kMaxQuantOnNBlockN tokens may write e4m3 with its 1x128 scales, fusing the intermediate's
// quantization).
// NOTE: bf16 activations only; f16 activations with e4m3 weights are left to the dense
// backend (the grouped backend's can_implement says so), which halves this file's variants.
#include "backends/grouped/grouped_gemm_launch.cuh"

namespace moe::grouped {

using E4M3 = __nv_fp8_e4m3;
using BF16 = __nv_bfloat16;

void launch_grouped_gemm_fp8_per_tensor(const GroupedGemmParams& p, const CUtensorMap& w,
                                        const CUtensorMap& x, GemmConfig config, Epilogue epilogue,
                                        DType out, int num_sms, cudaStream_t stream) {
  const bool fc2 = epilogue == Epilogue::kRoutingWeight;
  MOE_CHECK(fc2 ? out == DType::kBF16 : out == DType::kE4M3,
            "grouped GEMM per-tensor e4m3: ", fc2 ? "FC2 writes bf16" : "FC1 writes e4m3", ", not ",
            dtype_name(out));
  // (Prefill, config.tokens_on_m: the tokens-on-M tiles without promotion, FC1 writing e4m3
  // at its static scale.)
  MOE_CHECK(p.out_scales == nullptr,
            "grouped GEMM per-tensor e4m3: FC1 writes e4m3 at its static scale, no 1x128 output "
            "scales");
  switch (epilogue) {
    case Epilogue::kSwiGLU:
      return dispatch_block_n<E4M3, uint8_t, Epilogue::kSwiGLU, Scaling::kPerTensor>(
          config, p, w, x, x, num_sms, stream);
    case Epilogue::kSwiGLUOAI:
      return dispatch_block_n<E4M3, uint8_t, Epilogue::kSwiGLUOAI, Scaling::kPerTensor>(
          config, p, w, x, x, num_sms, stream);
    case Epilogue::kRoutingWeight:
      return dispatch_block_n<E4M3, BF16, Epilogue::kRoutingWeight, Scaling::kPerTensor>(
          config, p, w, x, x, num_sms, stream);
  }
  MOE_UNREACHABLE("epilogue ", static_cast<int>(epilogue));
}

void launch_grouped_gemm_fp8_block(const GroupedGemmParams& p, const CUtensorMap& w,
                                   const CUtensorMap& x, const CUtensorMap& xs, GemmConfig config,
                                   Epilogue epilogue, DType out, int num_sms, cudaStream_t stream,
                                   int cluster) {
  if (out == DType::kE4M3) {
    // FC1 quantizing its output (1x128 groups): the tokens-on-M tiles, and the tokens-on-N ones
    // up to kMaxQuantOnNBlockN tokens.
    MOE_CHECK(epilogue != Epilogue::kRoutingWeight &&
                  (config.tokens_on_m || config.block_n <= kMaxQuantOnNBlockN),
              "grouped GEMM block-scaled e4m3: only FC1 writes e4m3, on the tokens-on-M tiles "
              "or a tokens-on-N tile of at most ",
              kMaxQuantOnNBlockN, " tokens (",
              epilogue == Epilogue::kRoutingWeight ? "FC2" : "FC1 on block_n ", config.block_n,
              ")");
    MOE_CHECK(p.out_scales != nullptr && p.out_scales_ld > 0,
              "grouped GEMM block-scaled e4m3 output without out_scales");
    if (config.tokens_on_m) {
      if (epilogue == Epilogue::kSwiGLU) {
        return dispatch_tokens_on_m<E4M3, uint8_t, Epilogue::kSwiGLU, Scaling::kBlock>(
            config, p, w, x, xs, num_sms, stream);
      }
      return dispatch_tokens_on_m<E4M3, uint8_t, Epilogue::kSwiGLUOAI, Scaling::kBlock>(
          config, p, w, x, xs, num_sms, stream);
    }
    bool done = false;
    auto try_one = [&]<int kBlockN>() {
      if constexpr (has_quant_on_n_variant<kBlockN>()) {
        if (done || config.block_n != kBlockN) return;
        if (epilogue == Epilogue::kSwiGLU) {
          launch_variant<E4M3, uint8_t, kBlockN, Epilogue::kSwiGLU, Scaling::kBlock>(
              p, w, x, xs, num_sms, stream);
        } else {
          launch_variant<E4M3, uint8_t, kBlockN, Epilogue::kSwiGLUOAI, Scaling::kBlock>(
              p, w, x, xs, num_sms, stream);
        }
        done = true;
      }
    };
    [&]<size_t... I>(std::index_sequence<I...>) {
      (try_one.template operator()<kBlockScaledNs[I]>(), ...);
    }
    (std::make_index_sequence<std::size(kBlockScaledNs)>{});
    MOE_CHECK(done, "grouped GEMM: the e4m3-output FC1 tile of ", config.block_n,
              " tokens is not compiled in");
    return;
  }
  MOE_CHECK(out == DType::kBF16,
            "grouped GEMM block-scaled e4m3 writes bf16 or (FC1, tokens on M) "
            "e4m3, not ",
            dtype_name(out));
  switch (epilogue) {
    case Epilogue::kSwiGLU:
      return dispatch_block_n<E4M3, BF16, Epilogue::kSwiGLU, Scaling::kBlock>(
          config, p, w, x, xs, num_sms, stream, cluster);
    case Epilogue::kSwiGLUOAI:
      return dispatch_block_n<E4M3, BF16, Epilogue::kSwiGLUOAI, Scaling::kBlock>(
          config, p, w, x, xs, num_sms, stream, cluster);
    case Epilogue::kRoutingWeight:
      return dispatch_block_n<E4M3, BF16, Epilogue::kRoutingWeight, Scaling::kBlock>(
          config, p, w, x, xs, num_sms, stream, cluster);
  }
  MOE_UNREACHABLE("epilogue ", static_cast<int>(epilogue));
}

}  // namespace moe::grouped
