#!/usr/bin/env bash
# The grouped backend's benchmark grid of issue 4 on the device machine, plus a sweep of the
# token tile on the prefill cases. Writes JSON to $OUT.
# Usage: scripts/device/bench_grid.sh small|large|sweep|fp8|fp8tensor|fp8sweep|cluster
#   fp8sweep: the fp8_block tiles 64 / 128 / 192 forced at 512, 4096, 16384 tokens
#   cluster: MOE_GROUPED_CLUSTER off / on, bf16, six presets at 512 and 4096 tokens
#   fp8: issue 7's grid (DeepSeek-V3 and Qwen3-30B-A3B, 1..16384 tokens, fp8_block against
#        bf16 in the same run; DeepSeek-V3 16384 in a process of its own), the grouped GPU
#        tests first (compute-sanitizer: gpu_check.sh)
#   fp8tensor: the same grid in fp8_per_tensor, with its peer and against bf16
# L2_FLUSH=dirty: moe bench --l2-flush dirty (the flush of the grids up to v2.11); default clean.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
moe=.carry/bin/moe
flush="--l2-flush ${L2_FLUSH:-clean}"
case ${1:-small} in
  small)
    timeout 560 $moe bench $flush --models mixtral-8x7b,mixtral-8x22b,qwen3-30b-a3b,qwen3-235b-a22b,olmoe-1b-7b,deepseek-v2-lite,gpt-oss-20b,gpt-oss-120b,llama4-scout \
      --weight-pool 8 --reps 30 --out "$out/grid-small.json" 2>&1 | grep -v "loading" ;;
  large)
    timeout 560 $moe bench $flush --models deepseek-v3,kimi-k2,llama4-maverick --weight-pool 8 --reps 30 \
      --out "$out/grid-large.json" 2>&1 | grep -v "loading" ;;
  fp8)
    timeout 150 .carry/bin/moe_gpu_grouped_tests > "$out/grouped.log" 2>&1
    echo "grouped tests exit $?: $(grep -E '^\[  (PASSED|FAILED)' "$out/grouped.log" | tr '\n' ' ')"
    timeout 420 $moe bench $flush --models qwen3-30b-a3b,deepseek-v3 --quant fp8_block --vs-bf16 \
      --weight-pool 8 --reps 30 --out "$out/grid-fp8-block.json" 2>&1 | grep -v "loading"
    # DeepSeek-V3 at 16384 tokens with --vs-bf16 does not fit beside an 8-layer weight pool: a
    # process of its own, one layer.
    timeout 200 $moe bench $flush --models deepseek-v3 --tokens 16384 --quant fp8_block --vs-bf16 \
      --weight-pool 1 --reps 10 --out "$out/grid-fp8-deepseek-16384.json" 2>&1 | grep -v "loading" ;;
  fp8tensor)
    timeout 360 $moe bench $flush --models qwen3-30b-a3b,deepseek-v3 --quant fp8_per_tensor --vs-bf16 \
      --weight-pool 8 --reps 30 --out "$out/grid-fp8-per-tensor.json" 2>&1 | grep -v "loading"
    timeout 200 $moe bench $flush --models deepseek-v3 --tokens 16384 --quant fp8_per_tensor --vs-bf16 \
      --weight-pool 1 --reps 10 --out "$out/grid-fp8-per-tensor-deepseek-16384.json" 2>&1 | grep -v "loading" ;;
  fp8sweep)  # the fp8_block token tiles of the prefill heuristic (gemm_heuristic.h)
    for bn in 64 128 192; do
      echo "== fp8_block MOE_GROUPED_BLOCK_N=$bn"
      MOE_GROUPED_BLOCK_N=$bn timeout 100 $moe bench $flush --models qwen3-30b-a3b,deepseek-v3 --tokens 512,4096,16384 \
        --quant fp8_block --weight-pool 1 --reps 20 --no-peer --out "$out/sweep-fp8-$bn.json" 2>&1 | grep -E "^(qwen|deep)"
    done ;;
  cluster)  # MOE_GROUPED_CLUSTER off / on, bf16 prefill
    for c in 1 2; do
      echo "== bf16 MOE_GROUPED_CLUSTER=$c"
      MOE_GROUPED_CLUSTER=$c timeout 150 $moe bench $flush --models mixtral-8x7b,mixtral-8x22b,qwen3-235b-a22b,llama4-scout,gpt-oss-120b,deepseek-v3 \
        --tokens 512,4096 --weight-pool 1 --reps 15 --no-peer --out "$out/cluster-bf16-$c.json" 2>&1 | grep -E "^(qwen|deep|mixtral|llama|gpt)"
    done ;;
  sweep)
    for bn in 32 64 128 256; do
      echo "== MOE_GROUPED_BLOCK_N=$bn"
      MOE_GROUPED_BLOCK_N=$bn timeout 120 $moe bench $flush --models qwen3-30b-a3b,mixtral-8x7b --tokens 512,4096 \
        --reps 20 --no-peer --out "$out/sweep-$bn.json" 2>&1 | grep -E "^(qwen|mixtral)"
    done ;;
esac
