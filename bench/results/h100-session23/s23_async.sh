#!/usr/bin/env bash
# Twenty-third session, last experiment (branch next/pairs-async): the 2-CTA pair form of the
# decode FC1's quantization without a wait -- the pair's second quantizes the group from both
# halves (store_quantized_pair_async) -- its tests under memcheck / synccheck, then main's
# binary and the new one alternated at Qwen3-30B-A3B 1 / 8 tokens and DeepSeek-V3 1 token.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|ERROR SUMMARY|Barrier error" "$1" | sort | uniq -c | sort -rn | head -6; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
new='GroupedFp8.DecodeQuantizationInPairs*:GroupedFp8Gemm.FusedIntermediate*:*OddWeightTileCounts*'
step tests_new 60 $t --gtest_filter="$new"
grep -q "^\[  PASSED" $out/tests_new.log && ! grep -q "^\[  FAILED" $out/tests_new.log || { echo "stop"; cd $out && tar czf s23-async.tgz *.log; exit 1; }
step memcheck_new 90 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.DecodeQuantizationInPairs*:GroupedFp8Gemm.FusedIntermediate*'
step synccheck_new 90 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.DecodeQuantizationInPairs*:GroupedFp8Gemm.FusedIntermediate*'
step tests 120 $t
for r in 1 2; do for bin in moe_main moe; do
  printf "r%s %-8s " $r $bin
  for mt in qwen3-30b-a3b:1,8 deepseek-v3:1; do
    timeout 120 $b/$bin bench --models ${mt%%:*} --tokens ${mt##*:} --quant fp8_block \
      --weight-pool 8 --reps 30 --no-peer 2>&1 | grep -E "^(qwen|deepseek)" | awk '{printf "%s T=%s %s ms  ", substr($1,1,5), $2, $3}'
  done; echo
done; done | tee $out/async-ab.log
cd $out && tar czf s23-async.tgz *.log; rm -f *.log
