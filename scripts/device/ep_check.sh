#!/usr/bin/env bash
# Expert parallelism on a 2-GPU device machine: the GPU comm tests under mpirun and the
# dispatch/combine benchmark. NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
set -uo pipefail
out=${OUT:-/tmp/out}
export NCCL_NVLS_ENABLE=0
nccl_dir=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib  # NCCL 2.28.9, as built
export LD_LIBRARY_PATH=$nccl_dir:/usr/local/cuda/lib64:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name --format=csv,noheader
nvidia-smi topo -m | head -5
mpirun --version | head -1
ldd .carry/bin/moe_gpu_comm_tests | grep -E "not found|nccl|mpi" 
mpi="mpirun --allow-run-as-root --oversubscribe -np 2 -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH"
echo "== gpu comm tests"
timeout 300 $mpi .carry/bin/moe_gpu_comm_tests > "$out/gpu_comm.log" 2>&1
echo "exit $?"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|Failure|Expected|actual|what\(\)" "$out/gpu_comm.log" | sort | uniq -c | sort -rn | head -40
echo "== comm bench"
timeout 200 $mpi .carry/bin/moe_comm_bench --json "$out/comm_2gpu.json" > "$out/comm_bench.log" 2>&1
echo "exit $?"
tail -30 "$out/comm_bench.log"
