// Host side of the grouped GEMM: the variant table, the config heuristic and the dispatch on
// operand types to the translation unit that compiles each family.
//
// MOE_GROUPED_TOKENS_ON_M (developer switch, for A/B runs; unset: the heuristic,
// choose_block_scaled_config): 1 runs every block-scaled GEMM whose tile has 128 tokens or
// more as the tokens-on-M 128 x 128 tile, 0 none. Read once per process.
// MOE_GROUPED_PDL_ON_M=1 (developer switch; default 0): the tokens-on-M GEMMs launch with
// programmatic dependent launch as the others do (grouped_pdl_on_m, grouped_gemm_launch.cuh).
// MOE_GROUPED_CLUSTER=2 (developer switch, next to MOE_GROUPED_BLOCK_N; default 1, off): the
// bf16 and block-scaled e4m3 GEMMs whose token tile has a 2-CTA cluster variant compiled in
// (block_n 128 / 256 for bf16, 128 for fp8_block; 128 only with MOE_TRIM_KERNELS) run it:
// two CTAs share each token tile through TMA multicast (sm90_grouped_gemm.cuh, kCluster).
// f16, per-tensor e4m3 and the other tiles are unaffected. Read once per process.
// NOTE: off by default because it helps only some shapes (H100, one run each, bench/NOTES.md
// sixth session): bf16 at 4096 tokens DeepSeek-V3 -8%, Mixtral-8x22B -10%, Llama-4-Scout -4.5%,
// Qwen3-235B-A22B / GPT-OSS-120B / Mixtral-8x7B +1%; no block-scaled e4m3 case moved (its
// prefill GEMMs are not L2-bandwidth bound).
#include <cstdlib>
#include <span>
#include <string>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/grouped_gemm_launch.cuh"
#include "moe/errors.h"

namespace moe::grouped {
namespace {

std::span<const int> block_ns(Scaling scaling) {
  if (scaling == Scaling::kBlock) return kBlockScaledNs;
  return kBlockNs;
}

// MOE_GROUPED_TOKENS_ON_M: -1 unset, 0 or 1.
int tokens_on_m_setting() {
  static const int setting = [] {
    const char* env = std::getenv("MOE_GROUPED_TOKENS_ON_M");
    if (env == nullptr || *env == '\0') return -1;
    const std::string v = env;
    MOE_CHECK(v == "0" || v == "1", "MOE_GROUPED_TOKENS_ON_M=", v,
              " is not a setting of the grouped GEMM (0: tokens on N, 1: tokens on M from 128 "
              "tokens per tile; unset: the heuristic)");
    return v == "1" ? 1 : 0;
  }();
  return setting;
}

}  // namespace

int grouped_cluster_size() {
  static const int size = [] {
    const char* env = std::getenv("MOE_GROUPED_CLUSTER");
    if (env == nullptr || *env == '\0') return 1;
    const std::string v = env;
    MOE_CHECK(v == "1" || v == "2", "MOE_GROUPED_CLUSTER=", v,
              " is not a cluster size of the grouped GEMM (1: off, 2: 2-CTA clusters)");
    return v == "2" ? 2 : 1;
  }();
  return size;
}

bool grouped_pdl_on_m() {
  static const bool on = [] {
    const char* env = std::getenv("MOE_GROUPED_PDL_ON_M");
    if (env == nullptr || *env == '\0') return false;
    const std::string v = env;
    MOE_CHECK(v == "0" || v == "1", "MOE_GROUPED_PDL_ON_M=", v,
              " is not 0 or 1 (whether the tokens-on-M GEMMs launch with programmatic dependent "
              "launch)");
    return v == "1";
  }();
  return on;
}

GemmConfig with_tokens_on_m_setting(GemmConfig config, Scaling scaling) {
  if (tokens_on_m_setting() != 1 || scaling != Scaling::kBlock || config.block_n < kBlockM) {
    return config;
  }
  return tokens_on_m_config(config.block_n, kBlockScaledNs);
}

bool is_supported_block_n(int block_n, Scaling scaling) {
  for (int b : block_ns(scaling)) {
    if (b == block_n) return true;
  }
  return false;
}

GemmConfig gemm_config_for_block_n(int block_n) {
  MOE_CHECK(is_supported_block_n(block_n) || is_supported_block_n(block_n, Scaling::kBlock),
            "grouped GEMM: block_n ", block_n, " is not compiled in");
  return {block_n, stages_for(block_n)};
}

int gemm_smem_bytes(GemmConfig config, int num_experts) {
  return smem_bytes_for(config, num_experts);
}

GemmConfig choose_gemm_config(int64_t total_rows, int num_experts, Scaling scaling) {
  if (scaling == Scaling::kBlock) {
    const int setting = tokens_on_m_setting();
    return choose_block_scaled_config(total_rows, num_experts, block_ns(scaling),
                                      setting < 0 ? kBlockScaledTokensOnM : setting == 1);
  }
  return choose_gemm_config(total_rows, num_experts, block_ns(scaling));
}

void launch_grouped_gemm(const GroupedGemmParams& params, const CUtensorMap& w_map,
                         const CUtensorMap& x_map, const CUtensorMap* xs_map, GemmConfig config,
                         Epilogue epilogue, GemmTypes types, int num_sms, cudaStream_t stream) {
  const int stages = stages_for(config.block_n, config.tokens_on_m);
  MOE_CHECK(config.num_stages == stages, "grouped GEMM: ", config.num_stages,
            " stages requested for block_n ", config.block_n,
            config.tokens_on_m ? " with tokens on M" : "", "; compiled with ", stages);
  // The tokens-on-M tiles are those of the block-scaled list for both e4m3 scalings.
  MOE_CHECK(
      is_supported_block_n(config.block_n, config.tokens_on_m ? Scaling::kBlock : types.scaling),
      "grouped GEMM: block_n ", config.block_n, config.tokens_on_m ? " with tokens on M" : "",
      " is not compiled in for this scaling");
  MOE_CHECK(!config.tokens_on_m ||
                (types.scaling != Scaling::kNone && is_tokens_on_m_block_n(config.block_n)),
            "grouped GEMM: tokens on M is an e4m3 variant of block_n 128 or 192 (asked for "
            "block_n ",
            config.block_n, types.scaling == Scaling::kNone ? " with 16-bit operands" : "", ")");
  const bool fp8 = types.in == DType::kE4M3;
  MOE_CHECK(fp8 == (types.scaling != Scaling::kNone), "grouped GEMM: ", dtype_name(types.in),
            " operands with ", types.scaling == Scaling::kNone ? "no" : "fp8", " scaling");
  if (!fp8) {
    MOE_CHECK(types.out == types.in, "grouped GEMM: ", dtype_name(types.in), " operands give ",
              dtype_name(types.in), " outputs, not ", dtype_name(types.out));
    return launch_grouped_gemm_16bit(params, w_map, x_map, config, epilogue, types.in, num_sms,
                                     stream, grouped_cluster_size());
  }
  MOE_CHECK(params.w_scales != nullptr, "grouped GEMM: e4m3 operands without weight scales");
  if (types.scaling == Scaling::kPerTensor) {
    MOE_CHECK(params.act_scale != nullptr, "grouped GEMM: per-tensor e4m3 without act_scale");
    MOE_CHECK(types.out != DType::kE4M3 || params.out_scale != nullptr,
              "grouped GEMM: e4m3 output without out_scale");
    return launch_grouped_gemm_fp8_per_tensor(params, w_map, x_map, config, epilogue, types.out,
                                              num_sms, stream);
  }
  MOE_CHECK(xs_map != nullptr, "grouped GEMM: block-scaled e4m3 without the scales' map");
  return launch_grouped_gemm_fp8_block(params, w_map, x_map, *xs_map, config, epilogue, types.out,
                                       num_sms, stream, grouped_cluster_size());
}

void launch_grouped_gemm(const GroupedGemmParams& params, const CUtensorMap& w_map,
                         const CUtensorMap& x_map, GemmConfig config, Epilogue epilogue,
                         DType dtype, int num_sms, cudaStream_t stream) {
  launch_grouped_gemm(params, w_map, x_map, nullptr, config, epilogue, {dtype, dtype}, num_sms,
                      stream);
}

}  // namespace moe::grouped
