#!/usr/bin/env bash
# Two builds of the comm layer side by side on a 2-GPU device machine (issue 6): the two-GPU
# comm tests and compute-sanitizer memcheck of the one_sided tests for each test binary named
# in TESTS (files in .carry/bin). Benchmarks: scripts/device/one_sided_variants.sh.
# Usage: TESTS="moe_gpu_comm_tests moe_gpu_comm_tests_push" scripts/device/comm_ab.sh
set -uo pipefail
source "$(dirname "$0")/two_gpu_env.sh"
for t in ${TESTS:?name the test binaries}; do
  echo "== $t"
  start=$SECONDS
  timeout ${TEST_TIMEOUT:-130} $mpi $b/$t > "$out/$t.log" 2>&1
  echo "exit $? ($((SECONDS - start)) s)"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|Expected|Which|what\(\)" "$out/$t.log" | sort | uniq -c | sort -rn | head -20
  echo "== $t: compute-sanitizer memcheck, one_sided (both ranks)"
  start=$SECONDS
  timeout ${SAN_TIMEOUT:-130} $mpi /usr/local/cuda/bin/compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 \
    $b/$t --gtest_filter='*OneSided*:*GraphCapture*' > "$out/$t-memcheck.log" 2>&1
  echo "exit $? ($((SECONDS - start)) s)"
  grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED|SKIPPED) |Invalid|Failure" "$out/$t-memcheck.log" | sort | uniq -c | head -20
done
