#!/usr/bin/env bash
# Twenty-fifth session: FC1 / FC2 of fp8_per_tensor's prefill under ncu (time, DRAM and L2
# bytes) with MOE_GROUPED_PER_TENSOR_ON_M=1 (tokens on M, no promotion) against =block (the
# block-scaled kernels), at DeepSeek-V3 16384 and Qwen3-30B-A3B 4096 tokens.
set -uo pipefail
out=${OUT:-/tmp/out}
for mode in 1 block; do
  for case in "deepseek-v3 16384" "qwen3-30b-a3b 4096"; do
    set -- $case
    MOE_GROUPED_PER_TENSOR_ON_M=$mode QUANT=fp8_per_tensor OUT=$out bash scripts/device/profile.sh $1 $2
    mv $out/ncu_$1_$2_fp8_per_tensor.csv $out/ncu_$1_$2_$mode.csv
  done
done
for f in $out/ncu_*.csv; do echo "== $f"; python3 bench/tools/ncu_table.py "$f" 2>&1 | head -20; done
