#!/usr/bin/env bash
# Twenty-fourth session: fp8_per_tensor's prefill through the block-scaled kernels
# (MOE_GROUPED_PER_TENSOR_ON_M, default 1; FC1 quantizing at the static scale, kStaticOut) --
# the grouped GPU tests (and the fp8 ones with the switch off), the new test under memcheck,
# racecheck and synccheck, then the layer with the switch off / on alternated (one binary, two rounds) at the
# prefill token counts, and the fp8_per_tensor grid with its peer.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
new='GroupedFp8.PerTensorPrefillThroughTheBlockScaledKernels'
if [ "${SKIP_CHECKS:-0}" != 1 ]; then
  step test_new 90 $t --gtest_filter="$new"
  grep -q "^\[  PASSED  \] 1 test" $out/test_new.log || { echo "new test did not pass: stop"; grep -B2 -A8 "Failure" $out/test_new.log | head -40; exit 1; }
  step tests 240 $t
  step memcheck_new 200 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$new"
  step racecheck_new 200 $san --tool racecheck --error-exitcode 9 $t --gtest_filter="$new"
  step synccheck_new 200 $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$new"
  step per_tensor_off 120 MOE_GROUPED_PER_TENSOR_ON_M=0 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
fi
for r in 1 2; do for s in 0 1; do
  echo "== round $r MOE_GROUPED_PER_TENSOR_ON_M=$s"
  MOE_GROUPED_PER_TENSOR_ON_M=$s timeout 150 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens 512,2048,4096,16384 \
    --quant fp8_per_tensor --weight-pool 1 --reps 15 --no-peer --out $out/ab-$s-$r.json 2>&1 | grep -E "^(qwen|deep)|FAILED|skipped"
done; done
if [ "${GRID:-1}" = 1 ]; then
  timeout 200 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --quant fp8_per_tensor --weight-pool 8 --reps 30 \
    --out $out/grid-fp8-tensor-peer-v2.json > $out/grid_tensor.log 2>&1
  grep -E "^(qwen|deep)|^# (time|peer)" $out/grid_tensor.log
fi
cd $out && tar czf s24-as-block.tgz *.log && rm -f *.log
