#!/usr/bin/env bash
# one_sided on a 2-GPU device machine (issue 6): the two-GPU comm tests, compute-sanitizer
# memcheck on the one_sided tests (both ranks under the sanitizer), and the dispatch/combine
# benchmark of one_sided next to NCCL's all-to-all. NVLink multicast stays off.
# Usage: [SKIP_TESTS=1] [SKIP_SANITIZER=1] [BENCH_ARGS=...] scripts/device/one_sided_check.sh
# (binaries in .carry/bin; logs and JSON under $OUT)
set -uo pipefail
source "$(dirname "$0")/two_gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  echo "== two-GPU comm tests"
  timeout 300 $mpi $b/moe_gpu_comm_tests > "$out/gpu_comm.log" 2>&1
  echo "exit $?"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|Expected|Which|what\(\)" "$out/gpu_comm.log" | sort | uniq -c | sort -rn | head -30
fi
if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  echo "== compute-sanitizer memcheck, one_sided (both ranks)"
  timeout 300 $mpi /usr/local/cuda/bin/compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 \
    $b/moe_gpu_comm_tests --gtest_filter='*OneSided*:*GraphCapture*' > "$out/sanitizer_one_sided.log" 2>&1
  echo "exit $?"
  grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED|SKIPPED) |Invalid|Failure" "$out/sanitizer_one_sided.log" | sort | uniq -c | head -20
fi
echo "== comm bench"
timeout 240 $mpi $b/moe_comm_bench --strategies one_sided ${BENCH_ARGS:-} --json "$out/comm_one_sided.json" > "$out/comm_bench.log" 2>&1
echo "exit $?"
tail -22 "$out/comm_bench.log"
