#!/usr/bin/env bash
# Twenty-fourth session, after the second review: the static-scale FC1 (4 kernels) rebuilt with
# e4m3_value and staged_code_offset (register allocation moved; the other 58 fp8 kernels'
# SASS unchanged) -- the grouped GPU tests, the per-tensor prefill test under memcheck and
# synccheck, and the layer against the previous build (.carry/bin/moe_prev) alternated.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
new='GroupedFp8.PerTensorPrefillThroughTheBlockScaledKernels'
step tests 200 $t
step memcheck_new 200 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$new"
step synccheck_new 200 $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$new"
for r in 1 2; do for bin in moe_prev moe; do
  echo "== round $r $bin"
  timeout 150 $b/$bin bench --models qwen3-30b-a3b,deepseek-v3 --tokens 2048,4096,16384 --quant fp8_per_tensor \
    --weight-pool 1 --reps 15 --no-peer --out $out/review-$bin-$r.json 2>&1 | grep -E "^(qwen|deep)|FAILED"
done; done
cd $out && tar czf s24-review.tgz *.log && rm -f *.log
