#!/usr/bin/env bash
# FC2's TMA stores (MOE_GROUPED_TMA_STORE=1) against its 16-byte stores (0), one binary:
# the grouped GPU checks with the tokens-on-M tiles forced (and sanitizers) first, then the A/B.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/out}
t=$b/moe_gpu_grouped_tests
san=/usr/local/cuda/bin/compute-sanitizer
f='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*:*GroupedFp8Family*:*Graph*'
run() { local n=$1; shift; timeout 200 env "$@" > $OUT/$n.log 2>&1; echo "== $n exit $?: $(grep -E '^\[  (PASSED|FAILED)|ERROR SUMMARY' $OUT/$n.log | tr '\n' ' ')"; }
run tests $t
run tokens_on_m MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*:*Graph*'
run tokens_on_m192 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=192 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*:*Graph*'
for tool in memcheck synccheck; do
  run ${tool}_128 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $san --tool $tool --error-exitcode 9 $t --gtest_filter="$f"
  run ${tool}_192 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=192 $san --tool $tool --error-exitcode 9 $t --gtest_filter="$f"
done
(cd $OUT && tar czf tma-check-logs.tgz *.log && rm -f *.log)
mkdir -p $OUT/q $OUT/d
OUT=$OUT/q VAR=MOE_GROUPED_TMA_STORE VALUES="0 1" MODELS=qwen3-30b-a3b TOKENS=1,2048,4096,16384 ROUNDS=2 bash $b/s14_env.sh
OUT=$OUT/d VAR=MOE_GROUPED_TMA_STORE VALUES="0 1" MODELS=deepseek-v3 TOKENS=2048,4096 ROUNDS=2 REPS=10 bash $b/s14_env.sh
