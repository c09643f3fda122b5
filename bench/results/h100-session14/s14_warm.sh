#!/usr/bin/env bash
# Clean flush against no flush (warm L2), with the CUPTI timeline.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for m in ${MODELS:-qwen3-30b-a3b}; do for t in ${TOKENS:-1}; do for f in ${FLUSHES:-clean none}; do
  echo "== $m T=$t flush=$f"
  CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${m}_${t}_$f.csv \
    $b/${MOE:-moe} bench --models $m --tokens $t --quant ${QUANT:-fp8_block} --weight-pool 8 --reps ${REPS:-30} --no-peer \
    --l2-flush $f 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_${m}_${t}_$f.csv 40 | cut -c1-50,113-
done; done; done
cd $out && tar czf warm.tgz tr_*.csv && rm -f tr_*.csv
