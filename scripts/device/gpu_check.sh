#!/usr/bin/env bash
# Runs on the device machine (the `device` tool): the GPU test binaries carried in .carry/,
# compute-sanitizer on them, and a SASS check that the GEMM kernels use wgmma and TMA.
# Usage: scripts/device/gpu_check.sh [gtest filter] [sanitize: 0|1]
set -uo pipefail
filter=${1:-*}
sanitize=${2:-1}
out=${OUT:-/tmp/out}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
bin=.carry/bin
echo "== SASS of the grouped GEMM (instruction counts)"
/usr/local/cuda/bin/cuobjdump --dump-sass "$bin/moe_gpu_grouped_tests" 2>/dev/null |
  grep -oE "HGMMA\.[A-Z0-9x.]+|QGMMA\.[A-Z0-9x.]+|UTMALDG[.A-Z0-9]*|SYNCS\.[A-Z.]+|USETMAXREG[.A-Z]*" | sort | uniq -c | sort -rn | head -20
rc=0
for t in "$bin"/moe_gpu_*_tests; do
  [ -x "$t" ] || continue
  echo "== $t"
  "$t" --gtest_filter="$filter" 2>&1 | tee "$out/$(basename "$t").log" | grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|error|Expected|Which is|rel" | head -80
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
done
if [ "$sanitize" = 1 ]; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool"
    /usr/local/cuda/bin/compute-sanitizer --tool $tool --error-exitcode 9 \
      "$bin/moe_gpu_grouped_tests" --gtest_filter="${SANITIZE_FILTER:-GroupedGemm.*:GroupedFp8Gemm.*:Grouped.DeterministicBits:Presets/GroupedFamily.MatchesReference/deepseek_v3:Presets/GroupedFp8Family.MatchesReference/deepseek_v3_*:GroupedFp8.PartialBlocksAndEdgeShapes}" \
      > "$out/sanitizer_$tool.log" 2>&1
    s=$?
    tail -4 "$out/sanitizer_$tool.log"
    echo "compute-sanitizer $tool exit $s"
    [ $s -eq 0 ] || rc=1
  done
fi
exit $rc
