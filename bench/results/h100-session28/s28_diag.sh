#!/usr/bin/env bash
# Twenty-eighth session, diagnostic (moe_diag: the unit form with a device flag, patch
# fc1-unit-diag.patch; wrong codes by design in modes 1-2): why FC1's unit form ran slower.
# MOE_DIAG_FC1_UNIT: 0 the unit form; 1 the quantizing warps skip the rows (consumers stage as
# usual); 2 the consumers stage nothing either; 3 the consumers quantize as before
# (store_quantized_pair) on the unit form's 3-stage ring, the quantizing warps idle.
# MOE_GROUPED_FC1_UNIT=0: the 4-stage kernel with the consumers' quantization (main's).
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi -L
for r in 1 2; do
for v in own 0 1 2 3; do
  if [ $v = own ]; then env="MOE_GROUPED_FC1_UNIT=0"; else env="MOE_DIAG_FC1_UNIT=$v"; fi
  for c in "qwen3-30b-a3b 4096" "deepseek-v3 4096"; do set -- $c
    echo "== round $r trace $1 T=$2 $env"
    env $env CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_$1_$2_${v}_$r.csv \
      timeout 150 $b/moe_diag bench --models $1 --tokens $2 --quant fp8_block \
      --weight-pool 1 --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)" | cut -c1-60
    python3 scripts/kernel_timeline.py $out/tr_$1_$2_${v}_$r.csv 15 | grep -E "gemm" | cut -c1-60
  done
done
done
cd $out && tar czf s28-diag-traces.tgz tr_*.csv && rm -f tr_*.csv
