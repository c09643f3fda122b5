#!/usr/bin/env bash
# Seventeenth session, run 3: MOE_GROUPED_LAG=0..3 (moe_lag) against main's moe, after the
# fp8 backend tests on the forced 128-token tile at lags 2 and 3.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name --format=csv,noheader
for L in 2 3; do
  MOE_GROUPED_LAG=$L MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128 timeout 150 $b/moe_gpu_grouped_tests \
    --gtest_filter='GroupedFp8*:*GroupedFp8Family*' > $out/lag${L}_tests.log 2>&1
  echo "tests lag $L exit $?"; grep -E "^\[  (PASSED|FAILED) |Failure" $out/lag${L}_tests.log | sort | uniq -c | head -5
done
run() {  # tag binary env...
  local tag=$1 bin=$2; shift 2
  echo "== $tag"
  env "$@" timeout 200 $b/$bin bench --models qwen3-30b-a3b,deepseek-v3 --tokens ${TOKENS:-4096,16384} --quant fp8_block \
    --weight-pool 8 --reps 30 --no-peer --out $out/lag_${tag}.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
}
for r in 1 2; do
  run r${r}_main moe
  for L in ${LAGS:-0 1 2 3}; do run r${r}_lag$L moe_lag MOE_GROUPED_LAG=$L; done
done
cd $out && tar czf lag.tgz lag_*.json lag*_tests.log && rm -f lag_*.json
