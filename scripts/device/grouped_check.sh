#!/usr/bin/env bash
# The grouped backend's GPU checks on one device (every kernel change): the grouped GPU tests,
# the same shapes with the 2-CTA cluster variant (MOE_GROUPED_CLUSTER=2, at the heuristic's
# tiles and at 128), quantize_scatter taking two tokens a block at every shape
# (MOE_GROUPED_SCATTER_PAIR_FROM=1), and compute-sanitizer memcheck + synccheck on the fp8 and
# GEMM tests and on the odd weight-tile shapes with clusters; the block-scaled tests again
# with the tokens-on-M tiles forced (MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128, and
# 192: three consumer warpgroups; 128 with FC2's row-major y, MOE_GROUPED_UNIT_OUT=0),
# sanitizers too (racecheck on the 128 tile: its store warp's staging handoff). Binaries in
# .carry/bin (TESTS_BIN: the test binary, default moe_gpu_grouped_tests); logs under $OUT.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
t=.carry/bin/${TESTS_BIN:-moe_gpu_grouped_tests}
filter='*EdgeShapes*:*OddWeightTileCounts*:*LargeTokenCounts*:*PrefillTakes*:*PartialBlocks*:*Graph*:*EveryTileWidth*:*Ragged*:*DeterministicBits*:*Checkpoint*'
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -${2:-10}; }
step() {  # name, time limit (s), [VAR=value ...] command ...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null
  echo "== $name: exit $? ($((SECONDS - start)) s)"; summary "$out/$name.log"
}
san=/usr/local/cuda/bin/compute-sanitizer
step tests 150 $t
step scatter_pairs 150 MOE_GROUPED_SCATTER_PAIR_FROM=1 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step cluster2 120 MOE_GROUPED_CLUSTER=2 $t --gtest_filter="$filter"
step cluster2_block128 100 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $t --gtest_filter='*EdgeShapes*:*OddWeightTileCounts*:*Graph*:*PrefillTakes*'
step tokens_on_m 150 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step tokens_on_m_rowmajor 150 MOE_GROUPED_UNIT_OUT=0 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step tokens_on_m192 150 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=192 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck 120 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8*:GroupedGemm*:*OddWeightTileCounts*'
step synccheck 120 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='GroupedFp8*:GroupedGemm*:*OddWeightTileCounts*'
step memcheck_cluster2 90 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='*OddWeightTileCounts*'
step synccheck_cluster2 90 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='*OddWeightTileCounts*'
step memcheck_scatter_pairs 120 MOE_GROUPED_SCATTER_PAIR_FROM=1 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='*GroupedFp8Family*:GroupedFp8.RowsInRunMoe*'
step memcheck_tokens_on_m 120 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
step synccheck_tokens_on_m 120 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
step racecheck_tokens_on_m 150 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
step memcheck_tokens_on_m192 120 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=192 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
step synccheck_tokens_on_m192 120 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=192 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
# One archive for the logs: the device returns only a few files per call.
(cd "$out" && tar czf grouped-check-logs.tgz tests.log scatter_pairs.log tokens_on_m*.log cluster2*.log memcheck*.log synccheck*.log racecheck*.log && \
  rm -f tests.log scatter_pairs.log tokens_on_m*.log cluster2*.log memcheck*.log synccheck*.log racecheck*.log)
