#!/usr/bin/env bash
# EPLB online mode on a 2-GPU device machine (issue 9): the single-GPU EPLB tests (with
# compute-sanitizer on the online ones), the two-GPU NCCL migration tests, and
# `moe eplb layer` (layer time with / without EPLB, one migration, the worst forward during it).
# Usage: [SKIP_TESTS=1] [LAYER_RUNS='args;args'] scripts/device/eplb_check.sh
# (binaries in .carry/bin; logs and JSON under $OUT)
set -uo pipefail
source "$(dirname "$0")/two_gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  echo "== single-GPU EPLB tests"
  CUDA_VISIBLE_DEVICES=0 timeout 300 $b/moe_gpu_eplb_tests > "$out/gpu_eplb.log" 2>&1
  echo "exit $?"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure" "$out/gpu_eplb.log" | head -20
  echo "== compute-sanitizer memcheck, online tests"
  CUDA_VISIBLE_DEVICES=0 timeout 300 /usr/local/cuda/bin/compute-sanitizer --tool memcheck \
    --error-exitcode 9 $b/moe_gpu_eplb_tests --gtest_filter='*Online*qwen3*' 2>&1 |
    grep -E "ERROR SUMMARY|PASSED|FAILED" | head -5
fi
echo "== two-GPU EPLB online tests (NCCL)"
timeout 150 $mpi $b/moe_gpu_comm_tests --gtest_filter='*EplbOnline*' > "$out/gpu_comm_eplb.log" 2>&1
echo "exit $?"; grep -E "^\[  (PASSED|FAILED|SKIPPED|  OK) |Failure|Expected|Which|rank [01]" "$out/gpu_comm_eplb.log" | head -30
IFS=';' read -ra runs <<< "${LAYER_RUNS:---model qwen3-30b-a3b --quant bf16 --tokens 1024 --zipf 1.0 --redundant 16}"
for args in "${runs[@]}"; do
  name=$(echo "$args" | tr -s " -" "_" | sed "s/^_//")
  echo "== moe eplb layer $args"
  # SM clock, power and temperature every 100 ms beside the run: a slow stretch of forwards
  # that is the GPU's power management shows there.
  nvidia-smi --query-gpu=timestamp,index,clocks.sm,power.draw,temperature.gpu \
    --format=csv,noheader -lms 100 > "$out/eplb_layer_${name}_clocks.csv" 2>/dev/null &
  smi=$!
  timeout ${LAYER_TIMEOUT:-200} $mpi $b/moe eplb layer $args --out "$out/eplb_layer_$name.json" 2>&1 | tail -12
  kill $smi 2>/dev/null
done
