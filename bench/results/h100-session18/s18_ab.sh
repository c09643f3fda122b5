#!/usr/bin/env bash
# Eighteenth session, run 1: FC2's unit output staged for a store warp (kUnitOut). The fp8
# GEMM / backend tests with the 128 tokens-on-M tile forced, sanitizers on the GEMM tests,
# then main's moe against the new moe alternated.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
if [ "${TESTS:-1}" = 1 ]; then
step tests 150 $t
step tokens_on_m 150 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck_tom 120 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
step synccheck_tom 120 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
step racecheck_tom 200 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.OddWeightTileCounts:GroupedFp8.PartialBlocks*'
step tokens_on_m_old 150 MOE_GROUPED_UNIT_OUT=0 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
fi
for r in $(seq ${ROUNDS:-2}); do for v in ${VARIANTS:-moe_main moe}; do
  for mt in ${CASES:-qwen3-30b-a3b:2048,4096,16384 deepseek-v3:4096,16384}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r $v $m"
    timeout 240 $b/$v bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps ${REPS:-30} \
      --no-peer --out $out/ab_${v}_${m}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
cd $out && tar czf s18-ab.tgz ab_*.json *.log 2>/dev/null && rm -f ab_*.json *.log
