#!/usr/bin/env bash
# A/B of one environment setting ($VAR over $VALUES), one binary, alternated.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for r in $(seq ${ROUNDS:-2}); do for v in ${VALUES:-0 1}; do
  echo "== r$r $VAR=$v"
  env $VAR=$v timeout 250 $b/moe bench --models ${MODELS:-qwen3-30b-a3b,deepseek-v3} \
    --tokens ${TOKENS:-1,8,64} --quant ${QUANT:-fp8_block} --weight-pool 8 --reps ${REPS:-30} --no-peer \
    --out $out/env_${v}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
done; done
cd $out && tar czf env.tgz env_*.json && rm -f env_*.json
