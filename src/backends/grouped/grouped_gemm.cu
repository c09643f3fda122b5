// Host side of the grouped GEMM: the variant table, the config heuristic and the launcher.
#include <span>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/sm90_grouped_gemm.cuh"
#include "core/launch.cuh"
#include "moe/errors.h"

namespace moe::grouped {
namespace {

// The block_n values compiled in, written once. MOE_TRIM_KERNELS keeps a smaller set for
// fast developer/CI builds.
#ifdef MOE_TRIM_KERNELS
constexpr int kBlockNs[] = {8, 32, 128};
#else
constexpr int kBlockNs[] = {8, 16, 32, 64, 128, 256};
#endif

template <class T, int kBlockN, Epilogue kEpi>
void launch_variant(const GroupedGemmParams& p, const CUtensorMap& w_map, const CUtensorMap& x_map,
                    int num_sms, cudaStream_t stream) {
  constexpr int kStages = stages_for(kBlockN);
  auto* kernel = &sm90_grouped_gemm_kernel<T, kBlockN, kStages, kEpi>;
  const int smem = gemm_smem_bytes({kBlockN, kStages}, p.num_experts);
  MOE_CHECK(smem <= kMaxSmemBytes, "grouped GEMM needs ", smem, " bytes of shared memory for ",
            p.num_experts, " experts (limit ", kMaxSmemBytes, ")");
  static bool configured = false;  // NOTE: per instantiation; the attribute is per function
  if (!configured) {
    MOE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmemBytes));
    configured = true;
  }
  LaunchOptions o;
  o.grid = dim3(num_sms);
  o.block = dim3(kNumThreads);
  o.smem_bytes = smem;
  o.stream = stream;
  o.programmatic_dependent_launch = true;
  launch_kernel("sm90_grouped_gemm_kernel", kernel, o, w_map, x_map, p);
}

template <class T, Epilogue kEpi>
void dispatch_block_n(int block_n, const GroupedGemmParams& p, const CUtensorMap& w,
                      const CUtensorMap& x, int num_sms, cudaStream_t stream) {
  bool done = false;
  auto try_one = [&]<int kBlockN>() {
    if (!done && block_n == kBlockN) {
      launch_variant<T, kBlockN, kEpi>(p, w, x, num_sms, stream);
      done = true;
    }
  };
  [&]<size_t... I>(std::index_sequence<I...>) { (try_one.template operator()<kBlockNs[I]>(), ...); }
  (std::make_index_sequence<std::size(kBlockNs)>{});
  MOE_CHECK(done, "grouped GEMM: block_n ", block_n, " is not compiled in");
}

template <class T>
void dispatch_epilogue(Epilogue epi, int block_n, const GroupedGemmParams& p, const CUtensorMap& w,
                       const CUtensorMap& x, int num_sms, cudaStream_t stream) {
  switch (epi) {
    case Epilogue::kSwiGLU:
      return dispatch_block_n<T, Epilogue::kSwiGLU>(block_n, p, w, x, num_sms, stream);
    case Epilogue::kSwiGLUOAI:
      return dispatch_block_n<T, Epilogue::kSwiGLUOAI>(block_n, p, w, x, num_sms, stream);
    case Epilogue::kRoutingWeight:
      return dispatch_block_n<T, Epilogue::kRoutingWeight>(block_n, p, w, x, num_sms, stream);
  }
  MOE_UNREACHABLE("epilogue ", static_cast<int>(epi));
}

}  // namespace

bool is_supported_block_n(int block_n) {
  for (int b : kBlockNs) {
    if (b == block_n) return true;
  }
  return false;
}

GemmConfig gemm_config_for_block_n(int block_n) {
  MOE_CHECK(is_supported_block_n(block_n), "grouped GEMM: block_n ", block_n,
            " is not compiled in");
  return {block_n, stages_for(block_n)};
}

int gemm_smem_bytes(GemmConfig config, int num_experts) {
  return 1024 /* alignment slack */ + config.num_stages * stage_bytes(config.block_n) +
         2 * config.num_stages * 8 /* barriers */ + 2 * (num_experts + 1) * 4;
}

GemmConfig choose_gemm_config(int64_t total_rows, int num_experts) {
  return choose_gemm_config(total_rows, num_experts, std::span<const int>(kBlockNs));
}

void launch_grouped_gemm(const GroupedGemmParams& params, const CUtensorMap& w_map,
                         const CUtensorMap& x_map, GemmConfig config, Epilogue epilogue,
                         DType dtype, int num_sms, cudaStream_t stream) {
  MOE_CHECK(config.num_stages == stages_for(config.block_n), "grouped GEMM: ", config.num_stages,
            " stages requested for block_n ", config.block_n, "; compiled with ",
            stages_for(config.block_n));
  switch (dtype) {
    case DType::kBF16:
      return dispatch_epilogue<__nv_bfloat16>(epilogue, config.block_n, params, w_map, x_map,
                                              num_sms, stream);
    case DType::kF16:
      return dispatch_epilogue<__half>(epilogue, config.block_n, params, w_map, x_map, num_sms,
                                       stream);
    default:
      MOE_THROW("grouped GEMM: dtype ", dtype_name(dtype), " (bf16 or f16 only)");
  }
}

}  // namespace moe::grouped
