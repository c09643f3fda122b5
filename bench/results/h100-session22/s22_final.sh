#!/usr/bin/env bash
# Twenty-second session, last run: issue 7's grid on the session's final build
# (bench_grid.sh fp8 runs the 57 grouped GPU tests first), then the plan's tests under memcheck.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
bash scripts/device/bench_grid.sh fp8 2>&1 | grep -E "grouped tests|^(qwen|deepseek)|roofline" | cut -c1-140
timeout 60 /usr/local/cuda/bin/compute-sanitizer --tool memcheck --error-exitcode 9 \
  $b/moe_gpu_grouped_tests --gtest_filter='GroupedPlan.*:Grouped.PrefillTakesTheMultiBlockPlan' \
  > $out/plan_memcheck.log 2>&1
echo "plan memcheck: exit $? $(grep -E '^\[  (PASSED|FAILED)|ERROR SUMMARY' $out/plan_memcheck.log | tr '\n' ' ')"
