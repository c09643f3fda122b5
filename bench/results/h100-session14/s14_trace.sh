#!/usr/bin/env bash
# The layer's graph timeline (CUPTI injection library), per prefetch budget.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for m in ${MODELS:-qwen3-30b-a3b}; do for t in ${TOKENS:-1}; do for pf in ${PFS:-0 32}; do
  echo "== $m T=$t pf=$pf"
  MOE_GROUPED_L2_PREFETCH_MB=$pf CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${m}_${t}_pf$pf.csv \
    $b/${MOE:-moe} bench --models $m --tokens $t --quant ${QUANT:-fp8_block} --weight-pool 8 --reps ${REPS:-30} --no-peer \
    2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_${m}_${t}_pf$pf.csv 40
done; done; done
cd $out && tar czf traces.tgz tr_*.csv && rm -f tr_*.csv
