#!/usr/bin/env bash
# Twentieth session, run 8: FC1 on the 128-token tokens-on-M tile gathering its token rows from
# the once-quantized tokens (moe_ga; MOE_GROUPED_FC1_GATHER=0 its off-switch, moe_gaoff) against
# main. Tests and sanitizers first (the 128 tile forced for the layer tests), then the binaries
# alternated at prefill.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|RACECHECK SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
F='GroupedFp8Gemm.Gathered*:GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8.RowsInRunMoe*:GroupedFp8.LayerCaptured*'
TOM="MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128"
if [ "${TESTS:-1}" = 1 ]; then
step gather_test 60 $t --gtest_filter='GroupedFp8Gemm.Gathered*'
#step tests 150 $t
step tokens_on_m 120 $TOM $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
#step tokens_on_m_off 120 $TOM MOE_GROUPED_FC1_GATHER=0 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck 200 $TOM $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$F"
step synccheck 150 $TOM $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$F"
step racecheck 200 $TOM $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8Gemm.Gathered*:GroupedFp8.OddWeightTileCounts'
fi
for r in $(seq ${ROUNDS:-2}); do for v in ${VARIANTS:-moe_main moe_ga moe_gaoff}; do
  for mt in ${CASES:-qwen3-30b-a3b:2048,4096,16384 deepseek-v3:4096,16384}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r $v $m"
    timeout 240 $b/$v bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps ${REPS:-30} \
      --no-peer --out $out/ab_${v}_${m}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
cd $out && tar czf s20-${TAG:-ga}.tgz *.log ab_*.json 2>/dev/null; rm -f *.log ab_*.json
