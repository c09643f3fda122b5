#!/usr/bin/env bash
# Twenty-sixth session: quantize_scatter's 1x128 form (fp8_block) against its static-scale form
# (fp8_per_tensor) on the same shapes, and the 1x128 form without its scale stores
# (moe_diag, branch diag/qs-scales: MOE_DIAG_NO_SCALES=1, wrong results, timing only): graph
# timelines, the quantize_scatter row and the span.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for v in "qwen3-30b-a3b 4096" "qwen3-30b-a3b 16384" "deepseek-v3 4096" "deepseek-v3 16384"; do set -- $v
  for run in "moe fp8_block 0" "moe_diag fp8_block 1" "moe fp8_per_tensor 0"; do set -- $1 $2 $run
    echo "== $1 T=$2 $3 $4 no-scales=$5"
    env $([ $5 = 1 ] && echo MOE_DIAG_NO_SCALES=1) CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr.csv \
      timeout 120 $b/$3 bench --models $1 --tokens $2 --quant $4 --weight-pool 1 --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-80
    python3 scripts/kernel_timeline.py $out/tr.csv 15 | grep -E "quan|first start"
    mv $out/tr.csv $out/tr_$1_$2_$3_$4.csv
  done
done
cd $out && tar czf s26-qs.tgz tr_*.csv && rm -f tr_*.csv
