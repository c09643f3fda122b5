#!/usr/bin/env bash
# Twenty-first session, review: store_quantized_group storing through copy_out_rows (the 8
# tokens-on-N quantizing kernels changed, the others byte-identical) -- the grouped GPU tests,
# memcheck / racecheck of the fused-quantization tests, and Qwen3 512 / 64 with the path on and
# off (one round).
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
Q='GroupedFp8Gemm.FusedIntermediate*:GroupedFp8.TokensOnN*'
timeout 100 $t > $out/tests.log 2>&1; echo "tests: exit $? $(grep -E '^\[  (PASSED|FAILED)' $out/tests.log | tr '\n' ' ')"
timeout 100 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$Q" > $out/memcheck.log 2>&1
echo "memcheck: exit $? $(grep -E '^\[  (PASSED|FAILED)|ERROR SUMMARY' $out/memcheck.log | tr '\n' ' ')"
timeout 100 $san --tool racecheck --error-exitcode 9 $t --gtest_filter="$Q" > $out/racecheck.log 2>&1
echo "racecheck: exit $? $(grep -E '^\[  (PASSED|FAILED)|RACECHECK SUMMARY|Race reported' $out/racecheck.log | cut -c1-200 | tr '\n' ' ')"
for q in 0 1; do
  MOE_GROUPED_QUANT_ON_N=$q timeout 100 $b/moe bench --models qwen3-30b-a3b --tokens 64,512 --quant fp8_block \
    --weight-pool 8 --reps 30 --no-peer --out $out/ab_q$q.json 2>&1 | grep -E "^(# roofline|qwen)" | cut -c1-110
done
cd $out && tar czf s21-review.tgz *.log ab_*.json; rm -f *.log ab_*.json
