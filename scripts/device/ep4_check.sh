#!/usr/bin/env bash
# Expert parallelism on a 4-GPU device machine (issue 8): every strategy through `moe run`
# (rank 0 checks the gathered output against the single-process reference), with uneven
# token counts and a zero-token rank, and the dispatch/combine benchmark on N ranks.
# Usage: [RUN_ARGS='--zipf-skew 1'] [SKIP_BENCH=1] scripts/device/ep4_check.sh [ranks]
set -uo pipefail
n=${1:-4}
out=${OUT:-/tmp/out}
export NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib:/usr/local/cuda/lib64:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}
mpi="mpirun --allow-run-as-root --oversubscribe -np $n -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c
for s in alltoall allgather_reducescatter one_sided; do
  for t in 4099 3; do
    echo "== $n ranks, $s, $t tokens"
    timeout 120 $mpi .carry/bin/moe run --backend grouped --model qwen3-30b-a3b --tokens $t \
      --communication $s ${RUN_ARGS:-} 2>&1 | grep -E "chosen\]  $s|tokens per expert|oracle check|error" | head -4
  done
done
[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
echo "== dispatch/combine benchmark, $n ranks"
timeout 200 $mpi .carry/bin/moe_comm_bench --json "$out/comm_${n}gpu.json" > "$out/comm_${n}gpu.log" 2>&1
echo "exit $?"
