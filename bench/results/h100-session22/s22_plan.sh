#!/usr/bin/env bash
# Twenty-second session, run 2: plan_rows alone (its block-count loads issued together, its
# first pairs loaded before its wait) -- the grouped tests and the plan's memcheck, main's
# binary (.carry/bin/moe_main) and the new one alternated at prefill, their timelines, and ncu
# of plan_rows / route_kernel at Qwen3-30B-A3B 4096 tokens (where their time goes).
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
step tests 240 $t
step memcheck 240 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedPlan.*:Grouped.PrefillTakesTheMultiBlockPlan'
step racecheck 240 $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedPlan.*'
for r in $(seq ${ROUNDS:-2}); do for bin in moe_main moe; do
  for mt in ${CASES:-qwen3-30b-a3b:2048,4096,16384 deepseek-v3:4096}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r $bin $m"
    timeout 300 $b/$bin bench --models $m --tokens $tk --quant fp8_block \
      --weight-pool 8 --reps ${REPS:-30} --no-peer --out $out/ab_${bin}_${m}_r$r.json 2>&1 \
      | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
for bin in moe_main moe; do for mt in qwen3-30b-a3b:4096 qwen3-30b-a3b:16384; do
  m=${mt%%:*}; tk=${mt##*:}
  echo "== trace $bin $m T=$tk"
  CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${bin}_${m}_${tk}.csv \
    timeout 200 $b/$bin bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps 30 \
    --no-peer 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_${bin}_${m}_${tk}.csv 30 | cut -c1-110 | head -6
done; done
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
for bin in moe_main moe; do
  echo "== ncu $bin"
  timeout 200 $ncu --kernel-name regex:'plan_rows|route_kernel|plan_count' --launch-skip 0 --launch-count 3 \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
    $b/$bin bench --models qwen3-30b-a3b --tokens 4096 --quant fp8_block --weight-pool 1 --reps 1 \
    --warmup 0 --no-peer > $out/ncu_$bin.log 2>&1
  grep -E "plan_rows|route_kernel|plan_count|Duration|Warp Cycles Per Issued|Stall|Achieved Occupancy|Registers Per" $out/ncu_$bin.log | head -40
done
cd $out && tar czf s22-${TAG:-plan}.tgz *.log ab_*.json tr_*.csv 2>/dev/null; rm -f *.log ab_*.json tr_*.csv
