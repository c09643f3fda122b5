#!/usr/bin/env bash
# Twenty-eighth session, second build: FC1's 1x128 codes through quant::device::float2_to_e4m3x2
# (one pair conversion where neither value is NaN) in both the consumers' quantization
# (store_quantized_pair, MOE_GROUPED_FC1_UNIT=0) and the unit form's quantizing warps (=1);
# against moe_base (c44f04c's kernels: main's default path). Tests first.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
new='GroupedFp8Gemm.FusedIntermediateQuantizationIsBitExact:GroupedFp8.Fc1UnitFormEqualsTheConsumersQuantization'
step new_tests 200 $t --gtest_filter=$new
step forced128_own 200 MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 MOE_GROUPED_FC1_UNIT=0 $t --gtest_filter='*Fp8*'
cd $out && tar czf s28-pair-cvt-tests.tgz *.log && rm -f *.log && cd - > /dev/null
for r in 1 2; do for v in base 0 1; do
  if [ $v = base ]; then bin=moe_base; env=X=0; else bin=moe; env=MOE_GROUPED_FC1_UNIT=$v; fi
  echo "== round $r $bin $env"
  env $env timeout 200 $b/$bin bench --models qwen3-30b-a3b,deepseek-v3 --tokens 2048,4096,16384 \
    --quant fp8_block --weight-pool 1 --reps 15 --no-peer 2>&1 | grep -E "^(qwen|deep)|FAILED|rror" | cut -c1-60
done; done
