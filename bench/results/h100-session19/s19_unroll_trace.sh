#!/usr/bin/env bash
# Nineteenth session, run 15: the layer's graph timeline (kernel_trace) of main and of the
# unrolled K loop at Qwen3 2048 / 4096, alternated: where the in-graph loss of the unrolled
# kernels comes from.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for r in 1 2; do for v in moe_main moe_unroll; do for t in 2048 4096; do
  echo "== r$r $v qwen3 T=$t"
  CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${v}_${t}_r$r.csv \
    $b/$v bench --models qwen3-30b-a3b --tokens $t --quant fp8_block --weight-pool 8 --reps 30 --no-peer \
    2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_${v}_${t}_r$r.csv 30
done; done; done
cd $out && tar czf unroll-traces.tgz tr_*.csv && rm -f tr_*.csv
