#!/usr/bin/env bash
# Prefill diagnostics: weight scales fixed to 1 (no per-K-block scale loads) and no global
# output stores, against main; alternated; then CUPTI timelines at Qwen3-30B-A3B 4096.
b=$PWD/.carry/bin
OUT=${OUT:-/tmp/out}
mkdir -p $OUT/q $OUT/d
OUT=$OUT/q VARIANTS="moe moe_scales1 moe_noout" MODELS=qwen3-30b-a3b TOKENS=4096,16384 ROUNDS=2 bash $b/s13_ab3.sh
OUT=$OUT/d VARIANTS="moe moe_scales1 moe_noout" MODELS=deepseek-v3 TOKENS=4096 ROUNDS=2 REPS=10 bash $b/s13_ab3.sh
for v in moe moe_scales1 moe_noout; do
  mkdir -p $OUT/tl_$v
  MOE=$v OUT=$OUT/tl_$v FLUSHES=clean TOKENS=4096 REPS=20 bash $b/s14_warm.sh 2>&1 | tail -11
done
