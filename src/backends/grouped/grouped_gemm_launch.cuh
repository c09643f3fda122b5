// The grouped GEMM's variant launchers, shared by the translation units that instantiate one
// family each (grouped_gemm_16bit.cu, grouped_gemm_fp8.cu): a runtime (block_n, epilogue)
// picks a compiled kernel. The public entry points are in grouped_gemm.cu.
#pragma once

#include <span>
#include <utility>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/sm90_grouped_gemm.cuh"
#include "core/launch.cuh"
#include "moe/errors.h"

namespace moe::grouped {

// The block_n values compiled in, written once. MOE_TRIM_KERNELS keeps a smaller set for
// fast developer/CI builds.
// Block scaling keeps two accumulator sets: its widest tile is 192 (2 x 96 registers), which
// also holds the ~128 +- noise rows per expert of large prefills in one tile.
#ifdef MOE_TRIM_KERNELS
inline constexpr int kBlockNs[] = {8, 32, 128};
inline constexpr int kBlockScaledNs[] = {8, 32, 128};
#else
inline constexpr int kBlockNs[] = {8, 16, 32, 64, 128, 256};
inline constexpr int kBlockScaledNs[] = {8, 16, 32, 64, 128, 192};
#endif
static_assert(kBlockScaledNs[std::size(kBlockScaledNs) - 1] <= kMaxBlockScaledN);

/// The token tiles compiled for a scaling.
template <Scaling kScaling>
constexpr const auto& compiled_block_ns() {
  if constexpr (kScaling == Scaling::kBlock) {
    return kBlockScaledNs;
  } else {
    return kBlockNs;
  }
}

template <class TIn, class TOut, int kBlockN, Epilogue kEpi, Scaling kScaling>
void launch_variant(const GroupedGemmParams& p, const CUtensorMap& w_map, const CUtensorMap& x_map,
                    const CUtensorMap& xs_map, int num_sms, cudaStream_t stream) {
  constexpr int kStages = stages_for(kBlockN);
  auto* kernel = &sm90_grouped_gemm_kernel<TIn, TOut, kBlockN, kStages, kEpi, kScaling>;
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
  launch_kernel("sm90_grouped_gemm_kernel", kernel, o, w_map, x_map, xs_map, p);
}

/// Launches the variant of `block_n` among the tiles compiled for kScaling.
template <class TIn, class TOut, Epilogue kEpi, Scaling kScaling>
void dispatch_block_n(int block_n, const GroupedGemmParams& p, const CUtensorMap& w,
                      const CUtensorMap& x, const CUtensorMap& xs, int num_sms,
                      cudaStream_t stream) {
  constexpr const auto& kList = compiled_block_ns<kScaling>();
  bool done = false;
  auto try_one = [&]<int kBlockN>() {
    if (!done && block_n == kBlockN) {
      launch_variant<TIn, TOut, kBlockN, kEpi, kScaling>(p, w, x, xs, num_sms, stream);
      done = true;
    }
  };
  [&]<size_t... I>(std::index_sequence<I...>) { (try_one.template operator()<kList[I]>(), ...); }
  (std::make_index_sequence<std::size(kList)>{});
  MOE_CHECK(done, "grouped GEMM: block_n ", block_n, " is not compiled in for this variant");
}

// One family per translation unit (grouped_gemm.cu dispatches on GemmTypes).
void launch_grouped_gemm_16bit(const GroupedGemmParams& p, const CUtensorMap& w,
                               const CUtensorMap& x, GemmConfig config, Epilogue epilogue,
                               DType dtype, int num_sms, cudaStream_t stream);
void launch_grouped_gemm_fp8_per_tensor(const GroupedGemmParams& p, const CUtensorMap& w,
                                        const CUtensorMap& x, GemmConfig config, Epilogue epilogue,
                                        DType out, int num_sms, cudaStream_t stream);
void launch_grouped_gemm_fp8_block(const GroupedGemmParams& p, const CUtensorMap& w,
                                   const CUtensorMap& x, const CUtensorMap& xs, GemmConfig config,
                                   Epilogue epilogue, DType out, int num_sms, cudaStream_t stream);

}  // namespace moe::grouped
