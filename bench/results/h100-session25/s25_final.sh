#!/usr/bin/env bash
# Twenty-fifth session, the final main (the per-tensor path through the block-scaled kernels
# removed): the grouped GPU tests, the fp8 ones with the tokens-on-M GEMMs under PDL
# (MOE_GROUPED_PDL_ON_M=1) and with per-tensor's tokens-on-N prefill (=0), the new tests under
# memcheck and synccheck, and the layer once at the prefill token counts.
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
new='GroupedFp8.PerTensorPrefillOnTheTokensOnMTiles:GroupedFp8Gemm.PerTensorEveryTileWidthAgainstFloat64'
step tests 300 $t
step fp8_pdl_on_m 200 MOE_GROUPED_PDL_ON_M=1 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step fp8_per_tensor_on_n 200 MOE_GROUPED_PER_TENSOR_ON_M=0 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck_new 240 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$new"
step synccheck_new 240 $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$new"
for q in fp8_per_tensor fp8_block; do
  timeout 150 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens 2048,4096,16384 --quant $q --weight-pool 1 --reps 15 \
    --no-peer --out $out/final-$q.json 2>&1 | grep -E "^(qwen|deep)|FAILED" | cut -c1-80
done
cd $out && tar czf s25-final.tgz *.log && rm -f *.log
