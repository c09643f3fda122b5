#!/usr/bin/env bash
# FC1's grid at 8 tokens (MOE_GROUPED_FC1_SMS 0 = the rule, i.e. every SM there, 124, 128),
# alternated; then DeepSeek-V3 T=8 timelines at 0 and 124.
b=$PWD/.carry/bin
OUT=${OUT:-/tmp/out}
VAR=MOE_GROUPED_FC1_SMS VALUES="0 124 128" TOKENS=8 ROUNDS=3 bash $b/s14_env.sh
for v in 0 124; do
  mkdir -p $OUT/tl$v
  MOE_GROUPED_FC1_SMS=$v OUT=$OUT/tl$v MODELS=deepseek-v3 FLUSHES=clean TOKENS=8 REPS=20 bash $b/s14_warm.sh 2>&1 | tail -11
done
