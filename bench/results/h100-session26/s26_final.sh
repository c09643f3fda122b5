#!/usr/bin/env bash
# Twenty-sixth session, the final main: the bit-for-bit test now reaches fp8_block's transposed
# scales (4096 / 8192 tokens); 59 grouped GPU tests, that test alone (its time) and under
# memcheck, and the layer once at the prefill token counts.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard|OK \]" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
f='GroupedFp8.RowsInRunMoeEqualQuantizeInputBitForBit'
step rows_in 200 $t --gtest_filter=$f
step tests 300 $t
step memcheck_rows_in 400 $san --tool memcheck --error-exitcode 9 $t --gtest_filter=$f
for q in fp8_block fp8_per_tensor; do
  timeout 120 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens 4096,16384 --quant $q --weight-pool 1 --reps 15 \
    --no-peer --out $out/final-$q.json 2>&1 | grep -E "^(qwen|deep)|FAILED" | cut -c1-80
done
cd $out && tar czf s26-final.tgz *.log && rm -f *.log
