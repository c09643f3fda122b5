#!/usr/bin/env bash
# Per-kernel durations of layer forwards under Nsight Compute (device machine). Writes one
# CSV per case to $OUT; bench/tools/ncu_table.py turns them into a table.
# Usage: [QUANT=fp8_block] scripts/device/profile.sh MODEL TOKENS [MODEL TOKENS ...]
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
while [ $# -ge 2 ]; do
  model=$1 tokens=$2
  shift 2
  "$ncu" --clock-control none -k 'regex:^(route|router|plan|gather|sm90_grouped|finalize|scale_rows|quantize_|add_bias|sum_rows|pad_rows|round_rows)' \
    --metrics gpu__time_duration.sum,dram__bytes.sum,lts__t_bytes.sum \
    --csv .carry/bin/moe bench --models "$model" --tokens "$tokens" --reps 1 --warmup 1 --no-peer --weight-pool 1 \
    --backend grouped ${QUANT:+--quant $QUANT} \
    > "$out/ncu_${model}_${tokens}${QUANT:+_$QUANT}.csv" 2>/dev/null
  echo "$model T=$tokens: $(wc -l < "$out/ncu_${model}_${tokens}${QUANT:+_$QUANT}.csv") lines"
done
