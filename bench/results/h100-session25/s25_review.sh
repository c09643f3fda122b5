#!/usr/bin/env bash
# Twenty-fifth session's review: the tokens-on-M dispatch shared by both e4m3 scalings
# (dispatch_tokens_on_m) and kStaticOut derived in the kernel -- every kernel's SASS body
# unchanged, so the host dispatch is what is checked: the grouped GPU tests, the fp8 ones with
# per-tensor's tokens-on-N prefill, memcheck of the GEMM-alone tests, and the layer once.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
step tests 300 $t
step fp8_per_tensor_on_n 200 MOE_GROUPED_PER_TENSOR_ON_M=0 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck_gemm 240 /usr/local/cuda/bin/compute-sanitizer --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8Gemm.*'
for q in fp8_per_tensor fp8_block; do
  timeout 150 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens 4096,16384 --quant $q --weight-pool 1 --reps 15 \
    --no-peer --out $out/review-$q.json 2>&1 | grep -E "^(qwen|deep)|FAILED" | cut -c1-80
done
cd $out && tar czf s25-review.tgz *.log && rm -f *.log
