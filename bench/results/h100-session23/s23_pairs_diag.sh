#!/usr/bin/env bash
# Twenty-third session, diagnostic (branch diag/pairs-trace, not landed): the pair kernel's
# parts switched off one at a time (MOE_GROUPED_PAIRS_DIAG: 1 no amax exchange -- wrong scales
# --, 3 and no start cluster barrier, 5 and no exit barrier, 7 all three), against main's binary
# and the pairs as measured, at Qwen3-30B-A3B 1 and 8 tokens.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
for r in 1 2; do
  for v in main 0 1 3 5 7; do
    bin=moe; env=""
    [ $v = main ] && bin=moe_main || env="MOE_GROUPED_PAIRS_DIAG=$v"
    printf "r%s %-5s " $r $v
    timeout 120 env $env $b/$bin bench --models qwen3-30b-a3b --tokens 1,8 --quant fp8_block \
      --weight-pool 8 --reps 30 --no-peer 2>&1 | grep -E "^qwen" | awk '{printf "T=%s %s ms  ", $2, $3} END {print ""}'
  done
done | tee $out/pairs-diag.log
