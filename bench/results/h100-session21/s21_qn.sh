#!/usr/bin/env bash
# Twenty-first session: FC1 on the tokens-on-N tiles writing the intermediate in e4m3 with its
# 1x128 scales (two-tile units, store_quantized_group), against the 1x128 kernel after a bf16
# FC1 (MOE_GROUPED_QUANT_ON_N=0, main's path) in one binary. Tests and sanitizers first
# (TESTS=0 skips them), then the settings alternated, then the layer's timeline (TRACE=1).
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|RACECHECK SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
F='GroupedFp8Gemm*:GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8.TokensOnN*:GroupedFp8.LayerCaptured*:*GroupedFp8Family*'
if [ "${TESTS:-1}" = 1 ]; then
step tests 200 $t
step tests_qn_off 120 MOE_GROUPED_QUANT_ON_N=0 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck 200 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$F"
step synccheck 150 $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$F"
step racecheck 150 $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8Gemm.FusedIntermediate*:GroupedFp8.TokensOnN*:GroupedFp8.PartialBlocks*'
fi
for r in $(seq ${ROUNDS:-2}); do for q in 0 1; do
  for mt in ${CASES:-qwen3-30b-a3b:1,8,64,512 deepseek-v3:1,8,64,512}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r quant_on_n=$q $m"
    MOE_GROUPED_QUANT_ON_N=$q timeout 240 $b/moe bench --models $m --tokens $tk --quant fp8_block \
      --weight-pool 8 --reps ${REPS:-30} --no-peer --out $out/ab_q${q}_${m}_r$r.json 2>&1 \
      | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
if [ "${TRACE:-1}" = 1 ]; then
for q in 0 1; do for mt in ${TRACE_CASES:-qwen3-30b-a3b:8 qwen3-30b-a3b:512 deepseek-v3:512}; do
  m=${mt%%:*}; tk=${mt##*:}
  echo "== trace quant_on_n=$q $m T=$tk"
  MOE_GROUPED_QUANT_ON_N=$q CUDA_INJECTION64_PATH=$b/libkernel_trace.so \
    KERNEL_TRACE_OUT=$out/tr_q${q}_${m}_${tk}.csv \
    timeout 200 $b/moe bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps 30 \
    --no-peer 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_q${q}_${m}_${tk}.csv 30
done; done
fi
cd $out && tar czf s21-${TAG:-qn}.tgz *.log ab_*.json tr_*.csv 2>/dev/null; rm -f *.log ab_*.json tr_*.csv
