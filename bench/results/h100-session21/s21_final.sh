#!/usr/bin/env bash
# Twenty-first session, last run: the final build's rows path tested at every token count
# (MOE_GROUPED_SCATTER_PAIR_FROM=1) with memcheck, then issue 7's grid (bench_grid.sh fp8, which
# runs the 57 grouped GPU tests first).
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
R='GroupedFp8.RowsInRunMoe*:GroupedFp8.PartialBlocks*:*GroupedFp8Family*'
MOE_GROUPED_SCATTER_PAIR_FROM=1 timeout 120 /usr/local/cuda/bin/compute-sanitizer --tool memcheck \
  --error-exitcode 9 $b/moe_gpu_grouped_tests --gtest_filter="$R" > $out/rows_pair1_memcheck.log 2>&1
echo "rows path at every T, memcheck: exit $? $(grep -E '^\[  (PASSED|FAILED)|ERROR SUMMARY' $out/rows_pair1_memcheck.log | tr '\n' ' ')"
bash scripts/device/bench_grid.sh fp8 2>&1 | grep -E "grouped tests|^(qwen|deepseek)|roofline" | cut -c1-140
