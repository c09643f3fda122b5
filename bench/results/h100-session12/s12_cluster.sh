#!/usr/bin/env bash
# Tokens-on-M 2-CTA clusters (token tile multicast): tests + sanitizers, then A/B MOE_GROUPED_CLUSTER=1 vs 2 in one binary.
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}; b=.carry/bin; t=$b/moe_gpu_grouped_tests
san=/usr/local/cuda/bin/compute-sanitizer
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
if [ -z "${SKIP_TESTS:-}" ]; then
step c2_128 150 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*:*EdgeShapes*:*OddWeightTileCounts*:*Graph*:*PrefillTakes*:*DeterministicBits*'
step c2_default 150 MOE_GROUPED_CLUSTER=2 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*:*LargeTokenCounts*:*PrefillTakes*'
step memcheck_c2 150 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
step synccheck_c2 150 MOE_GROUPED_CLUSTER=2 MOE_GROUPED_BLOCK_N=128 $san --tool synccheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
fi
for r in $(seq ${ROUNDS:-2}); do for c in 1 2; do
  echo "== r$r cluster $c"
  MOE_GROUPED_CLUSTER=$c timeout 150 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens ${TOKENS:-2048,4096,16384} --quant fp8_block \
    --weight-pool 1 --reps 20 --no-peer --out $out/r${r}_c$c.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
done; done
(cd $out && tar czf s12-cluster-logs.tgz *.log *.json && rm -f *.log *.json)
