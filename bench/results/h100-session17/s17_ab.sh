#!/usr/bin/env bash
# Seventeenth session, run 1: the tokens-on-M GEMM tests of the new build, then main's moe
# against moe_tail (token boxes of 32 rows, idle warpgroups past a tile's rows) alternated.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
timeout 90 $b/moe_gpu_grouped_tests --gtest_filter='GroupedFp8Gemm*' > $out/gemm_tests.log 2>&1
echo "gemm tests exit $?"; grep -E "^\[  (PASSED|FAILED) |Failure" $out/gemm_tests.log | head
for r in $(seq ${ROUNDS:-2}); do for v in ${VARIANTS:-moe moe_tail}; do
  for mt in ${CASES:-qwen3-30b-a3b:512,4096,16384 deepseek-v3:4096}; do
    m=${mt%%:*}; t=${mt##*:}
    echo "== r$r $v $m"
    timeout 200 $b/$v bench --models $m --tokens $t --quant fp8_block --weight-pool 8 --reps ${REPS:-30} \
      --no-peer --out $out/ab_${v}_${m}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
cd $out && tar czf ab.tgz ab_*.json gemm_tests.log && rm -f ab_*.json
