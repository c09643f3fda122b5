#!/usr/bin/env bash
# Twenty-fourth session: the fp8 peer of `moe bench` (bench/harness/peer_cublaslt.h: cuBLASLt's
# e4m3 matmul per expert, 128x128 / 1x128 or per-tensor scales) -- under compute-sanitizer on
# small cases (a shared-expert preset included), then issue 7's grid with it.
# PART=1: memcheck + the fp8_block grid (Qwen3-30B-A3B, DeepSeek-V3, 1..16384 / 1..4096);
# PART=2: DeepSeek-V3 16384 (a process of its own) + the fp8_per_tensor grid.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
summary() { grep -E "ERROR SUMMARY|FAILED|peer|^# time/floor|^# peer/ours|what\(\)" "$1" | head -12; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
if [ "${PART:-1}" = 1 ]; then
  step memcheck_block 200 $san --tool memcheck --error-exitcode 9 $b/moe bench --models qwen3-30b-a3b,deepseek-v2-lite \
    --tokens 1,8,512 --quant fp8_block --weight-pool 1 --reps 2 --warmup 1 --out $out/memcheck-block.json
  step memcheck_tensor 120 $san --tool memcheck --error-exitcode 9 $b/moe bench --models deepseek-v2-lite \
    --tokens 1,512 --quant fp8_per_tensor --weight-pool 1 --reps 2 --warmup 1 --out $out/memcheck-tensor.json
  step grid_block 360 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --quant fp8_block --weight-pool 8 --reps 30 \
    --out $out/grid-fp8-block-peer.json
  grep -E "^(qwen|deep)|^# (time|peer)|peer" $out/grid_block.log
else
  step grid_ds16384 200 $b/moe bench --models deepseek-v3 --tokens 16384 --quant fp8_block --weight-pool 1 --reps 10 \
    --out $out/grid-fp8-block-peer-deepseek-16384.json
  grep -E "^(qwen|deep)|^# (time|peer)|peer" $out/grid_ds16384.log
  step grid_tensor 330 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 --quant fp8_per_tensor --weight-pool 8 --reps 30 \
    --out $out/grid-fp8-tensor-peer.json
  grep -E "^(qwen|deep)|^# (time|peer)|peer" $out/grid_tensor.log
fi
