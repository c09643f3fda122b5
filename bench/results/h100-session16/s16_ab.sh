#!/usr/bin/env bash
# A/B/C of moe builds alternated (MOE_GROUPED_RESIDENT=0: main's FC2 in the resident build).
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export MOE_GROUPED_RESIDENT=0
out=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name --format=csv,noheader
for r in $(seq ${ROUNDS:-2}); do for v in ${VARIANTS:-moe moe_pse moe_pse2}; do
  for mt in ${CASES:-qwen3-30b-a3b:2048,4096,16384 deepseek-v3:4096}; do
    m=${mt%%:*}; t=${mt##*:}
    echo "== r$r $v $m"
    timeout 200 $b/$v bench --models $m --tokens $t --quant fp8_block --weight-pool 8 --reps ${REPS:-30} \
      --no-peer --out $out/ab_${v}_${m}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
cd $out && tar czf ab.tgz ab_*.json && rm -f ab_*.json
