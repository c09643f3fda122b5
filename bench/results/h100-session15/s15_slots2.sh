#!/usr/bin/env bash
# Scale loader v3 (moe), the loader with the consumers still reading global scales (moe_ldonly),
# main (moe_prev); alternated.
b=$PWD/.carry/bin
OUT=${OUT:-/tmp/out}
mkdir -p $OUT/q $OUT/d
OUT=$OUT/q VARIANTS="moe_prev moe moe_ldonly" MODELS=qwen3-30b-a3b TOKENS=2048,4096 ROUNDS=2 bash $b/s13_ab3.sh
OUT=$OUT/d VARIANTS="moe_prev moe moe_ldonly" MODELS=deepseek-v3 TOKENS=2048 ROUNDS=2 REPS=10 bash $b/s13_ab3.sh
