#!/usr/bin/env bash
# Twenty-seventh session: the gather (quantize_input's e4m3 rows: expert parallelism's post-quant
# dispatch path) leaving fp8_block's 1x128 scales to transpose_scales_kernel from
# grouped::gather_scales_by_token (GatherParams::transpose_scales; the first run, PART=1 / 2,
# took grouped::scales_by_token's 2^19 stores as the threshold; PART=3 is the final binary), measured on one GPU through
# MOE_GROUPED_BLOCK_SCATTER=0 (fp8_block takes quantize_input's rows), A/B by
# MOE_GROUPED_GATHER_TRANSPOSE (0: the gather's 4-byte store per row and group, as before).
# PART=1: tests, sanitizers, the layer A/B (two rounds). PART=2: timelines; the default path
# against the base binary (moe_base: c44f04c).
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
rowsin='GroupedFp8.RowsInRunMoeEqualQuantizeInputBitForBit'
if [ "${PART:-1}" = 1 ]; then
  step rows_in 200 $t --gtest_filter=$rowsin
  step tests 360 $t
  step memcheck_rows_in 300 $san --tool memcheck --error-exitcode 9 $t --gtest_filter=$rowsin
  step synccheck_rows_in 300 $san --tool synccheck --error-exitcode 9 $t --gtest_filter=$rowsin
  cd $out && tar czf s27-gather-checks.tgz *.log && rm -f *.log && cd - > /dev/null
  for r in 1 2; do for v in 0 1; do
    echo "== round $r gather_transpose=$v (block_scatter=0)"
    MOE_GROUPED_BLOCK_SCATTER=0 MOE_GROUPED_GATHER_TRANSPOSE=$v timeout 200 $b/moe bench \
      --models qwen3-30b-a3b,deepseek-v3 --tokens 4096,16384 --quant fp8_block --weight-pool 1 \
      --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)|FAILED|rror" | cut -c1-60
  done; done
elif [ "${PART}" = 3 ]; then
  step new_test 200 $t --gtest_filter='GroupedFp8.GatherTransposedScales'
  step rows_in 200 $t --gtest_filter=$rowsin
  step tests 360 $t
  step memcheck_new 300 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.GatherTransposedScales'
  step synccheck_new 300 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.GatherTransposedScales'
  cd $out && tar czf s27-gather-final-checks.tgz *.log && rm -f *.log && cd - > /dev/null
  for r in 1 2; do for v in 0 1; do
    echo "== round $r gather_transpose=$v (block_scatter=0)"
    MOE_GROUPED_BLOCK_SCATTER=0 MOE_GROUPED_GATHER_TRANSPOSE=$v timeout 200 $b/moe bench \
      --models qwen3-30b-a3b,deepseek-v3 --tokens 4096,8192,16384 --quant fp8_block --weight-pool 1 \
      --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)|FAILED|rror" | cut -c1-60
  done; done
else
  for v in 0 1; do for c in "qwen3-30b-a3b 16384" "deepseek-v3 16384"; do set -- $c
    echo "== trace $1 T=$2 gather_transpose=$v"
    MOE_GROUPED_BLOCK_SCATTER=0 MOE_GROUPED_GATHER_TRANSPOSE=$v CUDA_INJECTION64_PATH=$b/libkernel_trace.so \
      KERNEL_TRACE_OUT=$out/tr_$1_$2_$v.csv timeout 150 $b/moe bench --models $1 --tokens $2 --quant fp8_block \
      --weight-pool 1 --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)" | cut -c1-60
    python3 scripts/kernel_timeline.py $out/tr_$1_$2_$v.csv 15 | cut -c1-110
  done; done
  cd $out && tar czf s27-gather-traces.tgz tr_*.csv && rm -f tr_*.csv && cd - > /dev/null
  for bin in moe_base moe; do
    echo "== default path $bin"
    timeout 150 $b/$bin bench --models qwen3-30b-a3b,deepseek-v3 --tokens 1,4096 --quant fp8_block \
      --weight-pool 1 --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)|FAILED|rror" | cut -c1-60
  done
fi
