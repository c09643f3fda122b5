#!/usr/bin/env bash
# Twenty-third session, last run: the opt-in 2-CTA cluster variant's tile-less rank (odd weight-
# tile counts) under synccheck, main's test binary against one whose warpgroup 1 waits for the
# rank's 'issued' phases; the cluster and fp8 tests of the fixed binary.
set -uo pipefail
b=$PWD/.carry/chk
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|ERROR SUMMARY|Barrier error" "$1" | sort | uniq -c | sort -rn | head -6; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
for bin in moe_gpu_grouped_tests_main moe_gpu_grouped_tests; do
  step synccheck_cluster2_$bin 90 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $san --tool synccheck --error-exitcode 9 $b/$bin --gtest_filter='*OddWeightTileCounts*'
done
step cluster2 120 MOE_GROUPED_CLUSTER=2 $b/moe_gpu_grouped_tests --gtest_filter='*EdgeShapes*:*OddWeightTileCounts*:*LargeTokenCounts*:*PrefillTakes*:*PartialBlocks*:*Graph*:*EveryTileWidth*:*Ragged*'
step cluster2_block128 100 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $b/moe_gpu_grouped_tests --gtest_filter='*EdgeShapes*:*OddWeightTileCounts*:*Graph*:*PrefillTakes*'
step memcheck_cluster2 90 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $san --tool memcheck --error-exitcode 9 $b/moe_gpu_grouped_tests --gtest_filter='*OddWeightTileCounts*'
step tests 200 $b/moe_gpu_grouped_tests
cd $out && tar czf s23-issued.tgz *.log; rm -f *.log
