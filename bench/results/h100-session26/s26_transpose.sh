#!/usr/bin/env bash
# Twenty-sixth session: fp8_block's prefill quantize_scatter writing each token's 1x128 scales
# once (token-major) and a transposition kernel writing them by row (transpose_scales_kernel),
# against the base binary (moe_base: ad462f5, a 4-byte store per row and group). Tests (default
# and the rows kernel at every token count), memcheck of the bit-for-bit test, then the layer
# alternated with the base binary (two rounds) and the new timeline.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
step tests 300 $t
step fp8_rows_kernel 200 MOE_GROUPED_SCATTER_PAIR_FROM=1 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck_rows 300 MOE_GROUPED_SCATTER_PAIR_FROM=1 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.RowsInRunMoeEqualQuantizeInputBitForBit:GroupedFp8.PartialBlocksAndEdgeShapes'
step synccheck_rows 300 MOE_GROUPED_SCATTER_PAIR_FROM=1 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.RowsInRunMoeEqualQuantizeInputBitForBit'
cd $out && tar czf s26-transpose-checks.tgz *.log && rm -f *.log && cd - > /dev/null
for r in 1 2; do for bin in moe_base moe; do
  echo "== round $r $bin"
  timeout 150 $b/$bin bench --models qwen3-30b-a3b,deepseek-v3 --tokens 512,2048,4096,16384 --quant fp8_block \
    --weight-pool 1 --reps 15 --no-peer --out $out/ab-$bin-$r.json 2>&1 | grep -E "^(qwen|deep)|FAILED" | cut -c1-80
done; done
for v in "qwen3-30b-a3b 4096" "qwen3-30b-a3b 16384" "deepseek-v3 16384"; do set -- $v
  echo "== trace $1 T=$2"
  CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_$1_$2.csv \
    timeout 120 $b/moe bench --models $1 --tokens $2 --quant fp8_block --weight-pool 1 --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-80
  python3 scripts/kernel_timeline.py $out/tr_$1_$2.csv 15 | cut -c1-100
done
cd $out && tar czf s26-transpose-traces.tgz tr_*.csv && rm -f tr_*.csv
