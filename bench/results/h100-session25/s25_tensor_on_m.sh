#!/usr/bin/env bash
# Twenty-fifth session: fp8_per_tensor's prefill on the tokens-on-M tiles without promotion
# (MOE_GROUPED_PER_TENSOR_ON_M=1, the new default; block: through the block-scaled kernels, the
# twenty-fourth session's; 0: the tokens-on-N tiles) -- the new tests, the grouped GPU tests, the
# new tests under memcheck / racecheck / synccheck, then the layer in the three settings
# alternated (one binary, two rounds) at the prefill token counts; GRID=1 adds the
# fp8_per_tensor grid with its peer; ROUNDS=0 only checks, SKIP_CHECKS=1 only times.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard|per-tensor on M" "$1" | sort | uniq -c | sort -rn | head -12; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
new='GroupedFp8.PerTensorPrefillOnTheTokensOnMTiles:GroupedFp8Gemm.PerTensorEveryTileWidthAgainstFloat64'
if [ "${SKIP_CHECKS:-0}" != 1 ]; then
  step test_new 200 $t --gtest_filter="$new"
  grep -q "^\[  PASSED  \] 2 tests" $out/test_new.log || { echo "new tests did not pass: stop"; grep -B2 -A8 "Failure" $out/test_new.log | head -60; exit 1; }
  step tests 300 $t
  step repeat_new 200 $t --gtest_filter="$new" --gtest_repeat=15
  step memcheck_new 240 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$new"
  step synccheck_new 240 $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$new"
  step racecheck_gemm 240 $san --tool racecheck --error-exitcode 9 $t --gtest_filter=GroupedFp8Gemm.PerTensorEveryTileWidthAgainstFloat64
fi
for r in $(seq 1 "${ROUNDS:-2}"); do for s in 1 block 0; do
  echo "== round $r MOE_GROUPED_PER_TENSOR_ON_M=$s"
  MOE_GROUPED_PER_TENSOR_ON_M=$s timeout 150 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens 512,2048,4096,16384 \
    --quant fp8_per_tensor --weight-pool 1 --reps 15 --no-peer --out $out/ab-$s-$r.json 2>&1 | grep -E "^(qwen|deep)|FAILED|skipped"
done; done
if [ "${GRID:-0}" = 1 ]; then
  timeout 240 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --quant fp8_per_tensor --weight-pool 8 --reps 30 \
    --out $out/grid-fp8-tensor-peer.json > $out/grid_tensor.log 2>&1
  grep -E "^(qwen|deep)|^# (time|peer)" $out/grid_tensor.log
fi
cd $out && tar czf s25-tensor-on-m.tgz *.log && rm -f *.log
