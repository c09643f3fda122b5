#!/usr/bin/env bash
# Twenty-first session, run 5: quantize_scatter in blocks of whole rows (QuantizeScatterParams::
# whole_rows; MOE_GROUPED_SCATTER_ROWS=0 the blocks of four groups, main's) -- tests (the rows
# path at every token count: MOE_GROUPED_SCATTER_PAIR_FROM=1) and memcheck, the settings
# alternated at prefill, the layer's timeline at 4096 tokens.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
R='GroupedFp8.RowsInRunMoe*:GroupedFp8.PartialBlocks*:*GroupedFp8Family*'
if [ "${TESTS:-1}" = 1 ]; then
step tests 200 $t
step rows_pair1 120 MOE_GROUPED_SCATTER_PAIR_FROM=1 $t --gtest_filter="$R"
step rows_off_pair1 120 MOE_GROUPED_SCATTER_PAIR_FROM=1 MOE_GROUPED_SCATTER_ROWS=0 $t --gtest_filter="$R"
step memcheck 200 MOE_GROUPED_SCATTER_PAIR_FROM=1 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$R"
fi
for r in $(seq ${ROUNDS:-2}); do for q in 0 1; do
  for mt in ${CASES:-qwen3-30b-a3b:512,2048,4096,16384 deepseek-v3:512,4096}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r scatter_rows=$q $m"
    MOE_GROUPED_SCATTER_ROWS=$q timeout 240 $b/moe bench --models $m --tokens $tk --quant fp8_block \
      --weight-pool 8 --reps ${REPS:-30} --no-peer --out $out/ab_s${q}_${m}_r$r.json 2>&1 \
      | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
if [ "${TRACE:-1}" = 1 ]; then
for q in 0 1; do for mt in ${TRACE_CASES:-qwen3-30b-a3b:4096 deepseek-v3:4096}; do
  m=${mt%%:*}; tk=${mt##*:}
  echo "== trace scatter_rows=$q $m T=$tk"
  MOE_GROUPED_SCATTER_ROWS=$q CUDA_INJECTION64_PATH=$b/libkernel_trace.so \
    KERNEL_TRACE_OUT=$out/tr_s${q}_${m}_${tk}.csv \
    timeout 200 $b/moe bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps 30 \
    --no-peer 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_s${q}_${m}_${tk}.csv 30 | cut -c1-110
done; done
fi
cd $out && tar czf s21-${TAG:-sr}.tgz *.log ab_*.json tr_*.csv 2>/dev/null; rm -f *.log ab_*.json tr_*.csv
