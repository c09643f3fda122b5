#!/usr/bin/env bash
# FC1's grid capped (MOE_GROUPED_FC1_SMS) at decode: A/B and the Qwen3 T=1 timeline.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
VAR=MOE_GROUPED_FC1_SMS VALUES="${VALUES:-0 48 64 96}" TOKENS=${TOKENS:-1} ROUNDS=2 bash $b/s14_env.sh
for v in ${TL_VALUES:-0 48}; do
  mkdir -p $out/tl$v
  MOE_GROUPED_FC1_SMS=$v OUT=$out/tl$v FLUSHES=clean TOKENS=1 bash $b/s14_warm.sh
done
