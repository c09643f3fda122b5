#!/usr/bin/env bash
# Twenty-fourth session: fp8_per_tensor's prefill tiles (tokens on N, no promotion) -- the token
# tile forced to 64 / 128 / 256 (MOE_GROUPED_BLOCK_N) against the heuristic, Qwen3-30B-A3B and
# DeepSeek-V3 at 512 / 4096 / 16384 tokens, fp8_block's heuristic beside them; peer off.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi -L
for q in fp8_per_tensor fp8_block; do
  for bn in ${BNS:-auto 64 128 256}; do
    [ $q = fp8_block ] && [ $bn != auto ] && continue
    env=(); [ $bn != auto ] && env=(MOE_GROUPED_BLOCK_N=$bn)
    echo "== $q block_n=$bn"
    timeout 120 env "${env[@]}" $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --tokens 512,4096,16384 --quant $q \
      --weight-pool 1 --reps 15 --no-peer --out $out/tensor-$q-$bn.json 2>&1 | grep -E "^(qwen|deep)|FAILED|skipped"
  done
done
