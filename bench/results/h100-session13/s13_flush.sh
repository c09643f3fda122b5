#!/usr/bin/env bash
# The decode rows with the clean and the dirty L2 flush, alternated, then the clean timeline.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for r in 1 2; do for f in clean dirty; do
  echo "== r$r $f"
  timeout 200 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens ${TOKENS:-1,8,64,512} --quant fp8_block \
    --weight-pool 8 --reps 30 --no-peer --l2-flush $f --out $out/flush_${f}_r$r.json 2>&1 | grep -E "^(#.*flush|#.*roofline|qwen|deepseek)" | cut -c1-110
done; done
for m in qwen3-30b-a3b deepseek-v3; do
  CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/trc_${m}_1.csv \
    $b/moe bench --models $m --tokens 1 --quant fp8_block --weight-pool 8 --reps 30 --no-peer > /dev/null 2>&1
  echo "== timeline $m T=1 clean"; python3 scripts/kernel_timeline.py $out/trc_${m}_1.csv 40
done
cd $out && tar czf flush.tgz flush_*.json trc_*.csv && rm -f trc_*.csv
