#!/usr/bin/env bash
# The decode intermediate's quantization in few blocks: tests, memcheck, A/B, timelines.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/out}
$b/moe_gpu_dense_tests --gtest_filter='Fp8QuantKernels.*' 2>&1 | tail -3
/usr/local/cuda/bin/compute-sanitizer --tool memcheck $b/moe_gpu_dense_tests --gtest_filter='Fp8QuantKernels.Act1x128*' 2>&1 | tail -2
mkdir -p $OUT/ab
OUT=$OUT/ab VAR=MOE_GROUPED_FEW_QUANT_BLOCKS VALUES="0 1" TOKENS=${TOKENS:-1,8,64} ROUNDS=3 bash $b/s14_env.sh
for v in 0 1; do
  mkdir -p $OUT/tl$v
  MOE_GROUPED_FEW_QUANT_BLOCKS=$v OUT=$OUT/tl$v MODELS="qwen3-30b-a3b deepseek-v3" FLUSHES=clean TOKENS=1 bash $b/s14_warm.sh
done
