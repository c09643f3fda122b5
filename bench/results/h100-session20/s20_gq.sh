#!/usr/bin/env bash
# Twentieth session, run 1: FC1 on the tokens-on-N tiles quantizing the intermediate's 1x128
# groups as they complete (moe_gq; MOE_GROUPED_FC1_GROUP_QUANT=0 its off-switch) and ptxas
# --register-usage-level=10 on the fp8 TU (moe_r10) against main (moe_main). Tests and
# sanitizers of the new test binary first, then the binaries alternated at decode / 512.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|RACECHECK SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
F='GroupedFp8Gemm*:GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8.LayerCaptured*:*GroupedFp8Family*'
if [ "${TESTS:-1}" = 1 ]; then
step tests 150 $t
step tests_gq_off 100 MOE_GROUPED_FC1_GROUP_QUANT=0 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck 200 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$F"
step synccheck 150 $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$F"
step racecheck 150 $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8Gemm.FusedIntermediate*:GroupedFp8.PartialBlocks*'
fi
for r in $(seq ${ROUNDS:-2}); do for v in ${VARIANTS:-moe_main moe_gq moe_r10}; do
  for mt in ${CASES:-qwen3-30b-a3b:1,8,64,512 deepseek-v3:1,8,64,512}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r $v $m"
    timeout 240 $b/$v bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps ${REPS:-30} \
      --no-peer --out $out/ab_${v}_${m}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
cd $out && tar czf s20-${TAG:-gq}.tgz *.log ab_*.json 2>/dev/null; rm -f *.log ab_*.json
