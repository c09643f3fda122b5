#!/usr/bin/env bash
# Twenty-sixth session, after the review's mends (the backend's 0 / 1 switches through one
# read_switch, the transposition's group count reused, the per-tensor kernel tests through one
# helper): 55 dense and 59 grouped GPU tests, the grouped fp8 tests with two switches set, a
# malformed switch's error, memcheck of the quantization tests, the layer once.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|is not 0 or 1" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
step dense 200 $b/moe_gpu_dense_tests
step grouped 300 $b/moe_gpu_grouped_tests
step fp8_switches 200 MOE_GROUPED_PER_TENSOR_SCATTER=0 MOE_GROUPED_UNIT_OUT=0 $b/moe_gpu_grouped_tests --gtest_filter='GroupedFp8*:*GroupedFp8Family*:-GroupedFp8.RowsInRunMoeEqualQuantizeInputBitForBit'
step bad_switch 60 MOE_GROUPED_QUANT_ON_N=yes $b/moe bench --models qwen3-30b-a3b --tokens 8 --quant fp8_block --reps 2 --no-peer
step memcheck_quant 200 $san --tool memcheck --error-exitcode 9 $b/moe_gpu_dense_tests --gtest_filter='Fp8QuantKernels.*'
for q in fp8_block fp8_per_tensor; do
  timeout 120 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens 1,4096 --quant $q --weight-pool 1 --reps 15 \
    --no-peer --out $out/review-$q.json 2>&1 | grep -E "^(qwen|deep)|FAILED" | cut -c1-80
done
cd $out && tar czf s26-review.tgz *.log && rm -f *.log
