// The grouped GEMM's variant launchers, shared by the translation units that instantiate one
// family each (grouped_gemm_16bit.cu, grouped_gemm_fp8.cu): a runtime (block_n, epilogue)
// picks a compiled kernel. The public entry points are in grouped_gemm.cu.
#pragma once

#include <algorithm>
#include <span>
#include <type_traits>
#include <utility>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/sm90_grouped_gemm.cuh"
#include "core/launch.cuh"
#include "moe/errors.h"

namespace moe::grouped {

// The block_n values compiled in, written once. MOE_TRIM_KERNELS keeps a smaller set for
// fast developer/CI builds.
// Block scaling keeps two accumulator sets: its widest tile is 192 (2 x 96 registers), taken
// from 384 expected rows per expert (choose_block_scaled_config: 128 is faster below).
#ifdef MOE_TRIM_KERNELS
inline constexpr int kBlockNs[] = {8, 32, 128};
inline constexpr int kBlockScaledNs[] = {8, 32, 128};
#else
inline constexpr int kBlockNs[] = {8, 16, 32, 64, 128, 256};
inline constexpr int kBlockScaledNs[] = {8, 16, 32, 64, 128, 192};
#endif
static_assert(kBlockScaledNs[std::size(kBlockScaledNs) - 1] <= kMaxBlockScaledN);

// The 2-CTA cluster variants (MOE_GROUPED_CLUSTER=2, sm90_grouped_gemm.cuh kCluster): for the
// prefill tiles only (the L2-bandwidth-bound ones), of bf16 and of block-scaled e4m3. Other
// operand types and tiles run the 1-CTA kernel whatever the setting.
#ifdef MOE_TRIM_KERNELS
inline constexpr int kClusterBlockNs[] = {128};
inline constexpr int kClusterBlockScaledNs[] = {128};
#else
inline constexpr int kClusterBlockNs[] = {128, 256};
// NOTE: not 192 -- its cluster variant spills next to the 'issued' barriers, and clusters
// moved no block-scaled prefill case on the H100 (bench/NOTES.md, sixth session).
inline constexpr int kClusterBlockScaledNs[] = {128};
#endif

/// Whether `block_n` is in a compiled tile list.
template <size_t N>
constexpr bool in_list(const int (&list)[N], int block_n) {
  for (int b : list) {
    if (b == block_n) return true;
  }
  return false;
}

/// Whether the 2-CTA cluster variant of (TIn, kScaling, kBlockN) is compiled in.
template <class TIn, Scaling kScaling, int kBlockN>
constexpr bool has_cluster_variant() {
  if constexpr (kScaling == Scaling::kBlock) {
    return in_list(kClusterBlockScaledNs, kBlockN);
  } else if constexpr (kScaling == Scaling::kNone && std::is_same_v<TIn, __nv_bfloat16>) {
    return in_list(kClusterBlockNs, kBlockN);
  } else {
    return false;
  }
}

/// MOE_GROUPED_CLUSTER (1, the default, or 2): CTAs per cluster of the grouped GEMM where a
/// cluster variant is compiled in (has_cluster_variant); read once (grouped_gemm.cu).
int grouped_cluster_size();

/// Whether the tokens-on-M (prefill) GEMMs launch with programmatic dependent launch:
/// MOE_GROUPED_PDL_ON_M=1 (A/B runs); default off -- they launch once the kernel before them has
/// finished. Read once (grouped_gemm.cu).
/// NOTE: under PDL their persistent CTAs take the SMs in the order the kernel before frees them,
/// not the block scheduler's usual placement (consecutive CTAs on one TPC), and consecutive units
/// are the token tiles of one weight tile (pair) that share its loads in L2: on the H100 the
/// layer measured 10-17% slower with PDL at DeepSeek-V3 2048-16384 tokens for fp8_per_tensor's
/// tiles without promotion, 5-7% for the block-scaled ones at 2048 (bench/NOTES.md, twenty-fifth
/// session). The decode (tokens-on-N) GEMMs keep PDL: their weight streams start under the
/// kernels before them.
bool grouped_pdl_on_m();

/// Whether the tokens-on-M variant of (kScaling, kBlockN) is compiled in (sm90_grouped_gemm.cuh
/// kTokensOnM): e4m3 (block-scaled, or per-tensor without promotion), tiles of 128 or 192
/// tokens (where that token tile is compiled for block scaling, kBlockScaledNs: the tokens-on-M
/// tiles of both) x 128 weight rows, with the staged epilogue.
template <Scaling kScaling, int kBlockN>
constexpr bool has_tokens_on_m_variant() {
#ifdef MOE_GROUPED_DIRECT_EPILOGUE
  return false;
#else
  return kScaling != Scaling::kNone && is_tokens_on_m_block_n(kBlockN) &&
         in_list(kBlockScaledNs, kBlockN);
#endif
}

/// Whether FC1's tokens-on-N variant of kBlockN writing e4m3 with its 1x128 scales
/// (sm90_grouped_gemm.cuh, store_quantized_group) is compiled in: block scaling's tiles below the
/// tokens-on-M ones (<= kMaxQuantOnNBlockN tokens: its codes fit in the staging).
template <int kBlockN>
constexpr bool has_quant_on_n_variant() {
#ifdef MOE_GROUPED_DIRECT_EPILOGUE
  return false;
#else
  return kBlockN <= kMaxQuantOnNBlockN && in_list(kBlockScaledNs, kBlockN);
#endif
}

/// The token tiles compiled for a scaling.
template <Scaling kScaling>
constexpr const auto& compiled_block_ns() {
  if constexpr (kScaling == Scaling::kBlock) {
    return kBlockScaledNs;
  } else {
    return kBlockNs;
  }
}

/// The most 2-CTA clusters of `kernel` (kNumThreads threads: clusters have two consumers, `smem`
/// bytes of shared memory each) that the current device holds at once
/// (cudaOccupancyMaxActiveClusters; not num_sms / 2: a GPC with an odd number of free SMs leaves
/// one idle). Queried again only when the kernel, the device or smem changes (launch_variant calls
/// it with one kernel per instantiation).
template <class Kernel>
int max_active_clusters(Kernel* kernel, int smem) {
  // NOTE: one cache per function type, which all the variants share: keyed by the kernel too.
  static Kernel* cached_kernel = nullptr;
  static int cached_device = -1, cached_smem = -1, cached = 0;
  int device = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  if (kernel != cached_kernel || device != cached_device || smem != cached_smem) {
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(2);
    config.blockDim = dim3(kNumThreads);
    config.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 2;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    config.attrs = attr;
    config.numAttrs = 1;
    int clusters = 0;
    MOE_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config),
                   "grouped GEMM: 2-CTA clusters of ", smem, " bytes of shared memory");
    cached_kernel = kernel;
    cached_device = device;
    cached_smem = smem;
    cached = clusters;
  }
  return cached;
}

template <class TIn, class TOut, int kBlockN, Epilogue kEpi, Scaling kScaling, int kCluster = 1,
          bool kTokensOnM = false, bool kUnitOut = false>
void launch_variant(const GroupedGemmParams& p, const CUtensorMap& w_map, const CUtensorMap& x_map,
                    const CUtensorMap& xs_map, int num_sms, cudaStream_t stream) {
  static_assert(kCluster == 1 || has_cluster_variant<TIn, kScaling, kBlockN>());
  static_assert(!kTokensOnM || (kCluster == 1 && has_tokens_on_m_variant<kScaling, kBlockN>()));
  constexpr int kStages = kUnitOut ? kUnitOutStages : stages_for(kBlockN, kTokensOnM);
  constexpr int kThreads = threads_for(kBlockN, kTokensOnM);
  static_assert(kCluster == 1 || kThreads == kNumThreads);
  auto* kernel = &sm90_grouped_gemm_kernel<TIn, TOut, kBlockN, kStages, kEpi, kScaling, kCluster,
                                           kTokensOnM, kUnitOut>;
  const int smem = gemm_smem_bytes({kBlockN, kStages, kTokensOnM, kUnitOut}, p.num_experts);
  MOE_CHECK(smem <= kMaxSmemBytes, "grouped GEMM needs ", smem, " bytes of shared memory for ",
            p.num_experts, " experts (limit ", kMaxSmemBytes, ")");
  static bool configured = false;  // NOTE: per instantiation; the attribute is per function
  if (!configured) {
    MOE_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmemBytes));
    configured = true;
  }
  if constexpr (kCluster == 1) {
    LaunchOptions o;
    o.grid = dim3(num_sms);
    o.block = dim3(kThreads);
    o.smem_bytes = smem;
    o.stream = stream;
    o.programmatic_dependent_launch = !kTokensOnM || grouped_pdl_on_m();
    launch_kernel("sm90_grouped_gemm_kernel", kernel, o, w_map, x_map, xs_map, p);
  } else {
    // A persistent grid of as many 2-CTA clusters as are resident at once (at most num_sms / 2,
    // the caller's SM budget), launched as launch_kernel does (programmatic dependent launch)
    // plus the cluster shape (core/launch.cuh's LaunchOptions has none).
    const int clusters = std::min(max_active_clusters(kernel, smem), num_sms / 2);
    MOE_CHECK(clusters >= 1, "grouped GEMM: no 2-CTA cluster of ", smem,
              " bytes of shared memory fits on this device (MOE_GROUPED_CLUSTER=2)");
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(2 * clusters);
    config.blockDim = dim3(kNumThreads);
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = kCluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attr;
    config.numAttrs = 2;
    MOE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, w_map, x_map, xs_map, p),
                   "launching sm90_grouped_gemm_kernel (2-CTA clusters)");
  }
}

/// Launches the tokens-on-M variant of `config` (has_tokens_on_m_variant: the tiles of
/// kBlockScaledNs, for both e4m3 scalings); FC2 with p.out_scales_ld > 0 (y's blocked layout,
/// GroupedGemmParams) on the 128-token tile stages its unit's output whole (kUnitOut).
template <class TIn, class TOut, Epilogue kEpi, Scaling kScaling>
void dispatch_tokens_on_m(GemmConfig config, const GroupedGemmParams& p, const CUtensorMap& w,
                          const CUtensorMap& x, const CUtensorMap& xs, int num_sms,
                          cudaStream_t stream) {
  constexpr bool kFc2 = kEpi == Epilogue::kRoutingWeight;
  MOE_CHECK(!kFc2 || p.out_scales_ld == 0 || config.block_n == 128,
            "grouped GEMM: FC2 writes y's blocked layout (out_scales_ld ", p.out_scales_ld,
            ") on the 128-token tokens-on-M tile only, not block_n ", config.block_n,
            " with tokens on M");
  bool done = false;
  auto try_one = [&]<int kBlockN>() {
    if constexpr (has_tokens_on_m_variant<kScaling, kBlockN>()) {
      if (done || config.block_n != kBlockN) return;
      done = true;
      if constexpr (kFc2 && kBlockN == 128) {
        if (p.out_scales_ld > 0) {
          return launch_variant<TIn, TOut, 128, kEpi, kScaling, 1, true, true>(p, w, x, xs, num_sms,
                                                                               stream);
        }
      }
      launch_variant<TIn, TOut, kBlockN, kEpi, kScaling, 1, true>(p, w, x, xs, num_sms, stream);
    }
  };
  [&]<size_t... I>(std::index_sequence<I...>) {
    (try_one.template operator()<kBlockScaledNs[I]>(), ...);
  }
  (std::make_index_sequence<std::size(kBlockScaledNs)>{});
  MOE_CHECK(done, "grouped GEMM: block_n ", config.block_n,
            " with tokens on M is not compiled in for this variant");
}

/// Launches the variant of `config` among the tiles compiled for kScaling: the tokens-on-M one
/// when config.tokens_on_m (dispatch_tokens_on_m), the 2-CTA cluster one when `cluster` is 2
/// and it is compiled in (has_cluster_variant), else the 1-CTA one.
template <class TIn, class TOut, Epilogue kEpi, Scaling kScaling>
void dispatch_block_n(GemmConfig config, const GroupedGemmParams& p, const CUtensorMap& w,
                      const CUtensorMap& x, const CUtensorMap& xs, int num_sms, cudaStream_t stream,
                      int cluster = 1) {
  if (config.tokens_on_m) {
    return dispatch_tokens_on_m<TIn, TOut, kEpi, kScaling>(config, p, w, x, xs, num_sms, stream);
  }
  MOE_CHECK(kEpi != Epilogue::kRoutingWeight || p.out_scales_ld == 0,
            "grouped GEMM: FC2 writes y's blocked layout (out_scales_ld ", p.out_scales_ld,
            ") on the 128-token tokens-on-M tile only, not block_n ", config.block_n);
  constexpr const auto& kList = compiled_block_ns<kScaling>();
  const int block_n = config.block_n;
  bool done = false;
  auto try_one = [&]<int kBlockN>() {
    if (!done && block_n == kBlockN) {
      if constexpr (has_cluster_variant<TIn, kScaling, kBlockN>()) {
        if (cluster == 2) {
          launch_variant<TIn, TOut, kBlockN, kEpi, kScaling, 2>(p, w, x, xs, num_sms, stream);
          done = true;
          return;
        }
      }
      launch_variant<TIn, TOut, kBlockN, kEpi, kScaling>(p, w, x, xs, num_sms, stream);
      done = true;
    }
  };
  [&]<size_t... I>(std::index_sequence<I...>) { (try_one.template operator()<kList[I]>(), ...); }
  (std::make_index_sequence<std::size(kList)>{});
  MOE_CHECK(done, "grouped GEMM: block_n ", block_n, " is not compiled in for this variant");
}

// One family per translation unit (grouped_gemm.cu dispatches on GemmTypes).
// `cluster`: grouped_cluster_size(), for the families with cluster variants.
void launch_grouped_gemm_16bit(const GroupedGemmParams& p, const CUtensorMap& w,
                               const CUtensorMap& x, GemmConfig config, Epilogue epilogue,
                               DType dtype, int num_sms, cudaStream_t stream, int cluster);
void launch_grouped_gemm_fp8_per_tensor(const GroupedGemmParams& p, const CUtensorMap& w,
                                        const CUtensorMap& x, GemmConfig config, Epilogue epilogue,
                                        DType out, int num_sms, cudaStream_t stream);
void launch_grouped_gemm_fp8_block(const GroupedGemmParams& p, const CUtensorMap& w,
                                   const CUtensorMap& x, const CUtensorMap& xs, GemmConfig config,
                                   Epilogue epilogue, DType out, int num_sms, cudaStream_t stream,
                                   int cluster);

}  // namespace moe::grouped
