#!/usr/bin/env bash
# Twenty-fifth session: the tokens-on-M GEMMs launched with programmatic dependent launch (their
# CTAs placed on the SMs as the kernel before them drains) against without it
# (MOE_GROUPED_PDL_ON_M=0: after it, the block scheduler's usual placement), for
# fp8_per_tensor without promotion (=1) and through the block-scaled kernels (=block), and
# fp8_block; one binary, alternated, two rounds.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for r in 1 2; do
  for v in "fp8_per_tensor 1" "fp8_per_tensor block" "fp8_block 1"; do set -- $v
    for pdl in 1 0; do
      echo "== round $r $1 MOE_GROUPED_PER_TENSOR_ON_M=$2 MOE_GROUPED_PDL_ON_M=$pdl"
      MOE_GROUPED_PER_TENSOR_ON_M=$2 MOE_GROUPED_PDL_ON_M=$pdl timeout 150 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 \
        --tokens ${TOKENS:-2048,4096,16384} --quant $1 --weight-pool 1 --reps 15 --no-peer --out $out/pdl-$1-$2-$pdl-$r.json \
        2>&1 | grep -E "^(qwen|deep)|FAILED" | cut -c1-80
    done
  done
done
