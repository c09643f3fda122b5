#!/usr/bin/env bash
# Twenty-third session, run 1: FC1 quantizing its output in 2-CTA clusters at decode
# (GemmConfig::quant_pairs, MOE_GROUPED_QUANT_PAIRS) and quantize_scatter's rows kernel storing
# 16 bytes a lane -- the grouped GPU tests, the new paths under compute-sanitizer, the cluster
# variants (their early weight loads are new), dram_mix (8- against 16-byte scatter stores),
# main's binary (.carry/bin/moe_main) and the new one alternated, and decode timelines.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard|hazard" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
new='GroupedFp8.DecodeQuantizationInPairs*:GroupedFp8Gemm.FusedIntermediate*:GroupedFp8.TokensOnNQuantization*'
if [ "${SKIP_CHECKS:-0}" != 1 ]; then
step tests_new 90 $t --gtest_filter="$new:Grouped.OddWeightTileCounts:GroupedFp8.OddWeightTileCounts"
step cluster2_odd 60 MOE_GROUPED_CLUSTER=2 $t --gtest_filter='*OddWeightTileCounts*'
grep -q "^\[  FAILED\|^\[  PASSED" $out/tests_new.log && grep -q "^\[  PASSED" $out/cluster2_odd.log || { echo "new tests did not pass: stop"; exit 1; }
step tests 200 $t
step scatter_pairs 100 MOE_GROUPED_SCATTER_PAIR_FROM=1 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step cluster2 120 MOE_GROUPED_CLUSTER=2 $t --gtest_filter='*EdgeShapes*:*OddWeightTileCounts*:*LargeTokenCounts*:*PrefillTakes*:*PartialBlocks*:*Graph*:*EveryTileWidth*:*Ragged*'
step memcheck_new 150 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$new"
step synccheck_new 150 $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$new"
step memcheck_scatter 100 MOE_GROUPED_SCATTER_PAIR_FROM=1 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='*GroupedFp8Family*:GroupedFp8.RowsInRunMoe*'
step memcheck_cluster2 60 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='*OddWeightTileCounts*'
[ "${RACECHECK:-0}" = 1 ] && step racecheck_new 150 $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.DecodeQuantizationInPairs*'
fi
if [ "${RECHECK:-0}" = 1 ]; then  # run 3: after the 'issued' wait of a cluster's tile-less rank
step tests_new 90 $t --gtest_filter="$new:Grouped.OddWeightTileCounts:GroupedFp8.OddWeightTileCounts"
step synccheck_new 150 $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$new"
step synccheck_cluster2 60 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='*OddWeightTileCounts*'
step memcheck_pairs 60 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.DecodeQuantizationInPairs*'
fi
[ "${CHECKS_ONLY:-0}" = 1 ] && { cd $out && tar czf s23-${TAG:-checks}.tgz *.log; rm -f *.log; exit 0; }
echo "== dram_mix"; timeout 120 $b/dram_mix 2>&1 | tail -8
for r in $(seq ${ROUNDS:-2}); do for bin in moe_main moe; do
  for mt in ${CASES:-qwen3-30b-a3b:1,8,4096,16384 deepseek-v3:1,8,4096}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r $bin $m"
    timeout 300 $b/$bin bench --models $m --tokens $tk --quant fp8_block \
      --weight-pool 8 --reps ${REPS:-30} --no-peer --out $out/ab_${bin}_${m}_r$r.json 2>&1 \
      | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
for bin in moe_main moe; do for mt in ${TRACES:-qwen3-30b-a3b:1 qwen3-30b-a3b:8 deepseek-v3:1}; do
  m=${mt%%:*}; tk=${mt##*:}
  echo "== trace $bin $m T=$tk"
  CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${bin}_${m}_${tk}.csv \
    timeout 200 $b/$bin bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps 30 \
    --no-peer 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_${bin}_${m}_${tk}.csv 30 | cut -c1-110 | head -10
done; done
cd $out && tar czf s23-${TAG:-pairs}.tgz *.log ab_*.json tr_*.csv 2>/dev/null; rm -f *.log ab_*.json tr_*.csv
