#!/usr/bin/env bash
# y in blocks of 128 features (MOE_GROUPED_Y_BLOCKED=1) against rows (0): the grouped GPU
# tests with the tokens-on-M tiles forced first (both settings), then the A/B.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/out}
t=$b/moe_gpu_grouped_tests
san=/usr/local/cuda/bin/compute-sanitizer
run() { local n=$1; shift; timeout 200 env "$@" > $OUT/$n.log 2>&1; echo "== $n exit $?: $(grep -E '^\[  (PASSED|FAILED)|ERROR SUMMARY' $OUT/$n.log | tr '\n' ' ')"; }
run tests $t
run tokens_on_m MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
run tokens_on_m192 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=192 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
run memcheck_128 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*:*GroupedFp8Family*'
(cd $OUT && tar czf yblk-check-logs.tgz *.log && rm -f *.log)
mkdir -p $OUT/q $OUT/d
OUT=$OUT/q VAR=MOE_GROUPED_Y_BLOCKED VALUES="0 1" MODELS=qwen3-30b-a3b TOKENS=2048,4096,16384 ROUNDS=2 bash $b/s14_env.sh
OUT=$OUT/d VAR=MOE_GROUPED_Y_BLOCKED VALUES="0 1" MODELS=deepseek-v3 TOKENS=2048,4096 ROUNDS=2 REPS=10 bash $b/s14_env.sh
