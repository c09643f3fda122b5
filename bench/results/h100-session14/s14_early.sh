#!/usr/bin/env bash
# Decode: the GEMMs' early weight stages (MOE_GROUPED_EARLY_STAGES=fc1,fc2), one binary, alternated.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for r in $(seq ${ROUNDS:-2}); do for v in ${VARIANTS:-0,0 4,0}; do
  echo "== r$r early=$v"
  MOE_GROUPED_EARLY_STAGES=$v timeout 250 $b/moe bench --models ${MODELS:-qwen3-30b-a3b,deepseek-v3} \
    --tokens ${TOKENS:-1,8,64} --quant fp8_block --weight-pool 8 --reps ${REPS:-30} --no-peer \
    --out $out/early_${v/,/_}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
done; done
cd $out && tar czf early.tgz early_*.json && rm -f early_*.json
