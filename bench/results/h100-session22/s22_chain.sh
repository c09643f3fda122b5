#!/usr/bin/env bash
# Twenty-second session: the plan's and the decode FC1's prologue latencies -- plan_rows issuing
# its block-count loads together and its first pairs' loads before its wait; the decode FC1
# (offsets from the router's pairs) loading its first ids before the barrier setup and scanning
# rows and tiles in one pass. Tests and memcheck of the new build, then main's binary
# (.carry/bin/moe_main) and the new one (.carry/bin/moe) alternated, then their timelines.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
P='GroupedPlan.*:Grouped.PrefillTakesTheMultiBlockPlan:GroupedGemm.OffsetsFromTheRoutersPairsEqualThePlans:Grouped.EdgeShapes:Grouped.LayerCapturedInACudaGraph'
if [ "${TESTS:-1}" = 1 ]; then
step tests 240 $t
step memcheck 240 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$P"
step racecheck 240 $san --tool racecheck --error-exitcode 9 $t --gtest_filter="GroupedPlan.*:GroupedGemm.OffsetsFromTheRoutersPairsEqualThePlans"
fi
for r in $(seq ${ROUNDS:-1}); do for bin in moe_main moe; do
  for mt in ${CASES:-qwen3-30b-a3b:1,8,4096,16384 deepseek-v3:1,8,4096}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r $bin $m"
    timeout 300 $b/$bin bench --models $m --tokens $tk --quant fp8_block \
      --weight-pool 8 --reps ${REPS:-30} --no-peer --out $out/ab_${bin}_${m}_r$r.json 2>&1 \
      | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
if [ "${TRACE:-1}" = 1 ]; then
for bin in moe_main moe; do for mt in ${TRACE_CASES:-qwen3-30b-a3b:1 qwen3-30b-a3b:4096}; do
  m=${mt%%:*}; tk=${mt##*:}
  echo "== trace $bin $m T=$tk"
  CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${bin}_${m}_${tk}.csv \
    timeout 200 $b/$bin bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps 30 \
    --no-peer 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_${bin}_${m}_${tk}.csv 30 | cut -c1-110
done; done
fi
cd $out && tar czf s22-${TAG:-chain}.tgz *.log ab_*.json tr_*.csv 2>/dev/null; rm -f *.log ab_*.json tr_*.csv
