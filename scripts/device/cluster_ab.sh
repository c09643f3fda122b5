#!/usr/bin/env bash
# The grouped GEMM's 2-CTA cluster variant (MOE_GROUPED_CLUSTER=2, issue 7) on the H100:
# correctness first, then the prefill A/B in one run, then where the time goes (ncu).
# Usage: scripts/device/cluster_ab.sh tests|bench|ncu   (binaries in .carry/bin; logs under $OUT)
#   tests: the grouped GPU tests with clusters on (the heuristic's tiles, then 128 / 192 / 256
#          forced), compute-sanitizer memcheck and synccheck on the odd weight-tile shapes
#   bench: fp8_block and bf16 prefill, cluster off / on / off / on (one process each)
#   ncu:   the GEMM kernels of qwen3-30b-a3b and deepseek-v3 T=4096 fp8_block, off and on:
#          duration, L2 and DRAM bytes, tensor-pipe activity, warp stalls
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
b=.carry/bin
t=$b/moe_gpu_grouped_tests
moe=$b/moe
filter='*EdgeShapes*:*OddWeightTileCounts*:*LargeTokenCounts*:*PrefillTakes*:*PartialBlocks*:*Graph*:*EveryTileWidth*:*Ragged*:*DeterministicBits*:*Checkpoint*'
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|Expected|Which|what\(\)|ERROR SUMMARY|error" "$1" | sort | uniq -c | sort -rn | head -${2:-12}; }
case ${1:?tests, bench or ncu} in
  tests)
    echo "== clusters, heuristic tiles"
    MOE_GROUPED_CLUSTER=2 timeout 150 $t --gtest_filter="$filter" > "$out/t_c2.log" 2>&1; echo "exit $?"; summary "$out/t_c2.log"
    echo "== clusters, block_n 128"
    MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 timeout 100 $t --gtest_filter='*EdgeShapes*:*OddWeightTileCounts*:*Graph*:*PrefillTakes*' > "$out/t_c2_128.log" 2>&1; echo "exit $?"; summary "$out/t_c2_128.log"
    echo "== clusters, block_n 192 (fp8_block) / 256 (bf16)"
    MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=192 timeout 60 $t --gtest_filter='GroupedFp8.OddWeightTileCounts:GroupedFp8.PartialBlocks*' > "$out/t_c2_192.log" 2>&1; echo "exit $?"; summary "$out/t_c2_192.log"
    MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=256 timeout 60 $t --gtest_filter='Grouped.OddWeightTileCounts:Grouped.EdgeShapes' > "$out/t_c2_256.log" 2>&1; echo "exit $?"; summary "$out/t_c2_256.log"
    for tool in memcheck synccheck; do
      echo "== compute-sanitizer $tool, clusters, block_n 128"
      MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 timeout 90 /usr/local/cuda/bin/compute-sanitizer --tool $tool \
        --error-exitcode 9 $t --gtest_filter='*OddWeightTileCounts*' > "$out/san_$tool.log" 2>&1
      echo "exit $?"; summary "$out/san_$tool.log" 6
    done ;;
  bench)
    for round in 1 2; do
      for c in 1 2; do
        echo "== round $round MOE_GROUPED_CLUSTER=$c fp8_block"
        MOE_GROUPED_CLUSTER=$c timeout 100 $moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens 512,4096,16384 \
          --quant fp8_block --weight-pool 1 --reps 20 --no-peer --out "$out/ab_fp8_c${c}_r$round.json" 2>&1 | grep -E "^(qwen|deepseek)"
      done
    done
    for c in 1 2; do
      echo "== MOE_GROUPED_CLUSTER=$c bf16"
      MOE_GROUPED_CLUSTER=$c timeout 60 $moe bench --models qwen3-30b-a3b,mixtral-8x7b --tokens 4096 \
        --weight-pool 1 --reps 20 --no-peer --out "$out/ab_bf16_c$c.json" 2>&1 | grep -E "^(qwen|mixtral)"
    done ;;
  ncu)
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    gmma=$("$ncu" --query-metrics --chip gh100 2>/dev/null | awk '{print $1}' | grep -E "^sm__pipe_tensor_op_gmma_cycles_active$" | head -1)
    metrics=gpu__time_duration.sum,dram__bytes.sum,lts__t_bytes.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed
    [ -n "$gmma" ] && metrics=$metrics,$gmma.avg.pct_of_peak_sustained_elapsed
    echo "metrics: $metrics"
    for model in qwen3-30b-a3b deepseek-v3; do
      for c in 1 2; do
        MOE_GROUPED_CLUSTER=$c timeout 120 "$ncu" --clock-control none -k 'regex:^sm90_grouped' --launch-skip 2 --launch-count 2 \
          --metrics $metrics --section WarpStateStats --csv \
          $moe bench --models $model --tokens 4096 --quant fp8_block --weight-pool 1 --reps 1 --warmup 1 --no-peer \
          > "$out/ncu_${model}_c$c.csv" 2> "$out/ncu_${model}_c$c.err"
        echo "== $model c$c exit $? ($(wc -l < "$out/ncu_${model}_c$c.csv") lines)"
        grep -E "gpu__time_duration|lts__t_bytes|dram__bytes|gmma|sm__throughput|Stall (Long|Wait|Barrier|Math|Not|Dispatch|Sleeping|Branch|Selected|MIO|LG|Short|No Inst)|Warp Cycles Per Issued" \
          "$out/ncu_${model}_c$c.csv" | awk -F'","' '{print $1" | "$(NF-2)" | "$NF" | "substr($5, 1, 110)}' | head -40
      done
    done
    tar czf "$out/ncu.tgz" -C "$out" $(cd "$out" && ls ncu_*) && rm -f "$out"/ncu_* ;;
esac
