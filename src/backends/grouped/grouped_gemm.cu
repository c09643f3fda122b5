// Host side of the grouped GEMM: the variant table, the config heuristic and the dispatch on
// operand types to the translation unit that compiles each family.
#include <span>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/grouped_gemm_launch.cuh"
#include "moe/errors.h"

namespace moe::grouped {
namespace {

std::span<const int> block_ns(Scaling scaling) {
  if (scaling == Scaling::kBlock) return kBlockScaledNs;
  return kBlockNs;
}

}  // namespace

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
    return choose_block_scaled_config(total_rows, num_experts, block_ns(scaling));
  }
  return choose_gemm_config(total_rows, num_experts, block_ns(scaling));
}

void launch_grouped_gemm(const GroupedGemmParams& params, const CUtensorMap& w_map,
                         const CUtensorMap& x_map, const CUtensorMap* xs_map, GemmConfig config,
                         Epilogue epilogue, GemmTypes types, int num_sms, cudaStream_t stream) {
  MOE_CHECK(config.num_stages == stages_for(config.block_n), "grouped GEMM: ", config.num_stages,
            " stages requested for block_n ", config.block_n, "; compiled with ",
            stages_for(config.block_n));
  MOE_CHECK(is_supported_block_n(config.block_n, types.scaling), "grouped GEMM: block_n ",
            config.block_n, " is not compiled in for this scaling");
  const bool fp8 = types.in == DType::kE4M3;
  MOE_CHECK(fp8 == (types.scaling != Scaling::kNone), "grouped GEMM: ", dtype_name(types.in),
            " operands with ", types.scaling == Scaling::kNone ? "no" : "fp8", " scaling");
  if (!fp8) {
    MOE_CHECK(types.out == types.in, "grouped GEMM: ", dtype_name(types.in), " operands give ",
              dtype_name(types.in), " outputs, not ", dtype_name(types.out));
    return launch_grouped_gemm_16bit(params, w_map, x_map, config, epilogue, types.in, num_sms,
                                     stream);
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
                                       num_sms, stream);
}

void launch_grouped_gemm(const GroupedGemmParams& params, const CUtensorMap& w_map,
                         const CUtensorMap& x_map, GemmConfig config, Epilogue epilogue,
                         DType dtype, int num_sms, cudaStream_t stream) {
  launch_grouped_gemm(params, w_map, x_map, nullptr, config, epilogue, {dtype, dtype}, num_sms,
                      stream);
}

}  // namespace moe::grouped
