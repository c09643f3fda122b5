#!/usr/bin/env bash
# A/B/C/D of moe builds, alternated, clean flush.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for r in $(seq ${ROUNDS:-2}); do for v in ${VARIANTS:-moe_prev moe}; do
  echo "== r$r $v"
  timeout 250 $b/$v bench --models ${MODELS:-qwen3-30b-a3b,deepseek-v3} --tokens ${TOKENS:-512} --quant fp8_block \
    --weight-pool 8 --reps ${REPS:-30} --no-peer --l2-flush clean --out $out/ab_${v}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
done; done
cd $out && tar czf ab.tgz ab_*.json && rm -f ab_*.json
