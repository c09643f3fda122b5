#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck on the routing and dense GPU test binaries
# (.carry/bin), on a subset that exercises every kernel. Device machine.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
cs=/usr/local/cuda/bin/compute-sanitizer
rc=0
run() {  # tool binary filter
  "$cs" --tool "$1" --error-exitcode 9 ".carry/bin/$2" --gtest_filter="$3" > "$out/cs_$1_$2.log" 2>&1
  local s=$?
  echo "$1 $2: exit $s; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/cs_$1_$2.log" | tail -1); $(grep -E '^\[  (PASSED|FAILED)' "$out/cs_$1_$2.log" | tr '\n' ' ')"
  [ $s -eq 0 ] || rc=1
}
for tool in memcheck racecheck; do
  run $tool moe_gpu_routing_tests 'RouteCuda.*:RouterCuda.*'
  run $tool moe_gpu_dense_tests 'Fp8QuantKernels.*:DenseGemm.*:Dense.EdgeShapes:Presets/DenseFamily.MatchesReference/deepseek_v3*'
done
exit $rc
