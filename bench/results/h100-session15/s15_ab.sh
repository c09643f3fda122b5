#!/usr/bin/env bash
# FC1's balanced decode grid (0: the rule) against the full grid (132), alternated.
b=$PWD/.carry/bin
OUT=${OUT:-/tmp/out}
mkdir -p $OUT/fp8 $OUT/bf16
OUT=$OUT/fp8 VAR=MOE_GROUPED_FC1_SMS VALUES="132 0" TOKENS=${TOKENS:-1,8,64,512} ROUNDS=3 bash $b/s14_env.sh
OUT=$OUT/bf16 QUANT=bf16 VAR=MOE_GROUPED_FC1_SMS VALUES="132 0" TOKENS=1,8 ROUNDS=2 bash $b/s14_env.sh
for v in 132 0; do
  mkdir -p $OUT/tl$v
  MOE_GROUPED_FC1_SMS=$v OUT=$OUT/tl$v MODELS=deepseek-v3 FLUSHES=clean TOKENS=1 bash $b/s14_warm.sh
done
