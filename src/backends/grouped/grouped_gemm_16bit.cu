// The grouped GEMM's bf16 / f16 variants (grouped_gemm_launch.cuh); bf16 also has 2-CTA cluster
// variants of the prefill tiles (MOE_GROUPED_CLUSTER=2).
#include "backends/grouped/grouped_gemm_launch.cuh"

namespace moe::grouped {
namespace {

// `cluster`: 2 runs the 2-CTA cluster variant where one is compiled in (bf16 prefill tiles).
template <class T>
void dispatch_epilogue(Epilogue epi, GemmConfig config, const GroupedGemmParams& p,
                       const CUtensorMap& w, const CUtensorMap& x, int num_sms, cudaStream_t stream,
                       int cluster) {
  switch (epi) {
    case Epilogue::kSwiGLU:
      return dispatch_block_n<T, T, Epilogue::kSwiGLU, Scaling::kNone>(config, p, w, x, x, num_sms,
                                                                       stream, cluster);
    case Epilogue::kSwiGLUOAI:
      return dispatch_block_n<T, T, Epilogue::kSwiGLUOAI, Scaling::kNone>(config, p, w, x, x,
                                                                          num_sms, stream, cluster);
    case Epilogue::kRoutingWeight:
      return dispatch_block_n<T, T, Epilogue::kRoutingWeight, Scaling::kNone>(
          config, p, w, x, x, num_sms, stream, cluster);
  }
  MOE_UNREACHABLE("epilogue ", static_cast<int>(epi));
}

}  // namespace

void launch_grouped_gemm_16bit(const GroupedGemmParams& p, const CUtensorMap& w,
                               const CUtensorMap& x, GemmConfig config, Epilogue epilogue,
                               DType dtype, int num_sms, cudaStream_t stream, int cluster) {
  switch (dtype) {
    case DType::kBF16:
      return dispatch_epilogue<__nv_bfloat16>(epilogue, config, p, w, x, num_sms, stream, cluster);
    case DType::kF16:
      return dispatch_epilogue<__half>(epilogue, config, p, w, x, num_sms, stream, cluster);
    default:
      MOE_THROW("grouped GEMM: dtype ", dtype_name(dtype), " (bf16 or f16 only)");
  }
}

}  // namespace moe::grouped
