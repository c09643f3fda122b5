#!/usr/bin/env bash
# The weight-scale loader warp (moe) against main (moe_prev) and main with streaming y stores
# (moe_ycs): the grouped GPU checks for the new kernels first, then the A/B.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/out}
mkdir -p $OUT/q $OUT/d
OUT=$OUT/q VARIANTS="moe_prev moe moe_ycs" MODELS=qwen3-30b-a3b TOKENS=2048,4096,16384 ROUNDS=2 bash $b/s13_ab3.sh
OUT=$OUT/d VARIANTS="moe_prev moe moe_ycs" MODELS=deepseek-v3 TOKENS=2048,4096 ROUNDS=2 REPS=10 bash $b/s13_ab3.sh
