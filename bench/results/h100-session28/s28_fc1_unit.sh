#!/usr/bin/env bash
# Twenty-eighth session: fp8_block's FC1 on the 128-token tokens-on-M tile in its unit form
# (GemmConfig::unit_out; the consumers stage the unit's bf16 activations and warps 1-3 of the
# producer warpgroup quantize them to e4m3 + 1x128 scales while the consumers go on), A/B by
# MOE_GROUPED_FC1_UNIT (0: the consumers' own quantization, store_quantized_pair, as before).
# PART=1: the new tests, the fp8 tests on the forced 128-token tile, the layer A/B (two rounds).
# PART=2: every grouped GPU test, the sanitizers. PART=3: timelines, the default path
# against the base binary (moe_base: c44f04c, whose default one-GPU path is 04012d7's).
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
new='GroupedFp8Gemm.FusedIntermediateQuantizationIsBitExact:GroupedFp8.Fc1UnitFormEqualsTheConsumersQuantization'
forced='MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128'
if [ "${PART:-1}" = 1 ]; then
  step new_tests 200 $t --gtest_filter=$new
  step forced128_unit 200 $forced $t --gtest_filter='*Fp8*'
  cd $out && tar czf s28-fc1-unit-first.tgz *.log && rm -f *.log && cd - > /dev/null
  for r in 1 2; do for v in 0 1; do
    echo "== round $r fc1_unit=$v"
    MOE_GROUPED_FC1_UNIT=$v timeout 200 $b/moe bench \
      --models qwen3-30b-a3b,deepseek-v3 --tokens 2048,4096,16384 --quant fp8_block --weight-pool 1 \
      --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)|FAILED|rror" | cut -c1-60
  done; done
elif [ "${PART}" = 2 ]; then
  step tests 420 $t
  step forced128_own 200 $forced MOE_GROUPED_FC1_UNIT=0 $t --gtest_filter='*Fp8*'
  step memcheck_new 300 $san --tool memcheck --error-exitcode 9 $t --gtest_filter=$new
  step synccheck_new 300 $san --tool synccheck --error-exitcode 9 $t --gtest_filter=$new
  step racecheck_gemm 400 $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8Gemm.FusedIntermediateQuantizationIsBitExact'
  cd $out && tar czf s28-fc1-unit-checks.tgz *.log && rm -f *.log && cd - > /dev/null
else
  for v in 0 1; do for c in "qwen3-30b-a3b 4096" "deepseek-v3 4096"; do set -- $c
    echo "== trace $1 T=$2 fc1_unit=$v"
    MOE_GROUPED_FC1_UNIT=$v CUDA_INJECTION64_PATH=$b/libkernel_trace.so \
      KERNEL_TRACE_OUT=$out/tr_$1_$2_$v.csv timeout 150 $b/moe bench --models $1 --tokens $2 --quant fp8_block \
      --weight-pool 1 --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)" | cut -c1-60
    python3 scripts/kernel_timeline.py $out/tr_$1_$2_$v.csv 15 | cut -c1-110
  done; done
  cd $out && tar czf s28-fc1-unit-traces.tgz tr_*.csv && rm -f tr_*.csv && cd - > /dev/null
  for bin in moe_base moe; do
    echo "== default path $bin"
    timeout 200 $b/$bin bench --models qwen3-30b-a3b,deepseek-v3 --tokens 1,512,4096,16384 --quant fp8_block \
      --weight-pool 1 --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)|FAILED|rror" | cut -c1-60
  done
fi
