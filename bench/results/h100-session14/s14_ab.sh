#!/usr/bin/env bash
# A/B of the plan's L2 prefetch budget (MOE_GROUPED_L2_PREFETCH_MB), one binary, alternated.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for r in $(seq ${ROUNDS:-2}); do for pf in ${PFS:-0 32}; do
  echo "== r$r pf=$pf timing=${TIMING:-in-graph}"
  MOE_GROUPED_L2_PREFETCH_MB=$pf timeout 250 $b/${MOE:-moe} bench --models ${MODELS:-qwen3-30b-a3b,deepseek-v3} \
    --tokens ${TOKENS:-1,8,64} --quant ${QUANT:-fp8_block} --weight-pool 8 --reps ${REPS:-30} --no-peer \
    --timing ${TIMING:-in-graph} --out $out/ab_pf${pf}_${TIMING:-in-graph}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
done; done
cd $out && tar czf ab_${TAG:-x}.tgz ab_*.json && rm -f ab_*.json
