#!/usr/bin/env bash
# Builds of `moe` side by side on one GPU (issue 7's method: one run, alternated processes):
#   1. TESTS: grouped GPU test binaries (in .carry/bin) run whole, then under compute-sanitizer
#      memcheck and synccheck on SAN_FILTER;
#   2. every build in VARIANTS times MODELS x TOKENS (moe bench, QUANT, one process per build
#      and round, ROUNDS rounds alternating the builds);
#   3. NCU="model:tokens ..." profiles the grouped GEMMs of those cases under every build: time,
#      L2 / DRAM bytes, and the raw warp-state and compute-pipe metrics (stall reasons, tensor
#      pipe activity), one CSV per build and case, packed into ncu.tgz.
# Usage: VARIANTS="moe_main moe_new" [TESTS=...] [QUANT=fp8_block] [MODELS=...] [TOKENS=...] \
#        [ROUNDS=2] [NCU="deepseek-v3:4096"] [ENV="MOE_GROUPED_CLUSTER=2"] scripts/device/grouped_ab.sh
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
b=.carry/bin
quant=${QUANT:-fp8_block}
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -${2:-10}; }
for t in ${TESTS:-}; do
  echo "== $t"
  start=$SECONDS
  timeout ${TEST_TIMEOUT:-150} $b/$t > "$out/$t.log" 2>&1
  echo "exit $? ($((SECONDS - start)) s)"; summary "$out/$t.log"
  for tool in memcheck synccheck; do
    echo "== $t: compute-sanitizer $tool on ${SAN_FILTER:=GroupedFp8*:GroupedGemm*}"
    start=$SECONDS
    timeout ${SAN_TIMEOUT:-120} /usr/local/cuda/bin/compute-sanitizer --tool $tool --error-exitcode 9 \
      $b/$t --gtest_filter="$SAN_FILTER" > "$out/$t-$tool.log" 2>&1
    echo "exit $? ($((SECONDS - start)) s)"; summary "$out/$t-$tool.log" 6
  done
done
for round in $(seq ${ROUNDS:-2}); do
  for v in ${VARIANTS:?name the moe builds}; do
    echo "== round $round $v ($quant)"
    env ${ENV:-} timeout ${BENCH_TIMEOUT:-100} $b/$v bench --models ${MODELS:-qwen3-30b-a3b,deepseek-v3} \
      --tokens ${TOKENS:-512,4096,16384} --quant $quant --weight-pool 1 --reps 20 --no-peer \
      --out "$out/ab_${v}_r$round.json" 2>&1 | grep -E "^(qwen|deepseek|mixtral|kimi|llama|gpt|olmoe)"
  done
done
if [ -n "${NCU:-}" ]; then
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  mkdir -p "$out/ncu"
  for case in $NCU; do
    model=${case%%:*} tokens=${case##*:}
    for v in $VARIANTS; do
      env ${ENV:-} timeout 120 "$ncu" --clock-control none -k 'regex:^sm90_grouped' --launch-skip 2 --launch-count 2 \
        --metrics gpu__time_duration.sum,dram__bytes.sum,lts__t_bytes.sum \
        --section WarpStateStats --section ComputeWorkloadAnalysis --page raw --csv \
        $b/$v bench --models $model --tokens $tokens --quant $quant --weight-pool 1 --reps 1 --warmup 1 --no-peer \
        > "$out/ncu/${model}_${tokens}_$v.csv" 2> "$out/ncu/${model}_${tokens}_$v.err"
      echo "== ncu $model T=$tokens $v: exit $?"
    done
  done
  tar czf "$out/ncu.tgz" -C "$out" ncu && rm -rf "$out/ncu"
fi
