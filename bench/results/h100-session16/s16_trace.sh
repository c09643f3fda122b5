#!/usr/bin/env bash
# Sixteenth session: the prefill consumers' cycle trace (diag/prefill-trace build, moe_trace)
# beside the main kernels (moe with MOE_GROUPED_RESIDENT=0) for the perturbation.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
for mt in ${CASES:-qwen3-30b-a3b:4096}; do
  m=${mt%%:*}; t=${mt##*:}
  for bin in ${BINS:-moe moe_trace}; do
    echo "== $bin $m T=$t"
    MOE_GROUPED_RESIDENT=0 timeout 200 $b/$bin bench --models $m --tokens $t --quant fp8_block --weight-pool 8 \
      --reps ${REPS:-20} --no-peer --out $out/t_${bin}_${m}_$t.json 2>&1 | grep -E "^(qwen|deepseek)|^#" | cut -c1-110
  done
done
cd $out && tar czf trace.tgz *.json 2>/dev/null; rm -f *.json
