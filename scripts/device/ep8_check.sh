#!/usr/bin/env bash
# Expert parallelism on the 8-GPU device kind (issue 8): the 2-rank GPU comm tests (fp8_block
# post-quant dispatch through the grouped backend included), every strategy through `moe run`
# on 8 ranks (ep4_check.sh 8), the dispatch/combine benchmark, and fp8_block layers on 8 ranks.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib:/usr/local/cuda/lib64:$PWD/.carry/lib
echo "== gpu comm tests, 2 ranks (fp8_block EP through grouped now runs)"
timeout 240 mpirun --allow-run-as-root --oversubscribe -np 2 -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH .carry/bin/moe_gpu_comm_tests > $OUT/gpu_comm.log 2>&1; echo "exit $?"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |SKIPPED \]|FAILED \]" $OUT/gpu_comm.log | sort | uniq -c | head -20
bash scripts/device/ep4_check.sh 8
tail -30 $OUT/comm_8gpu.log
for s in alltoall one_sided; do echo "== 8 ranks fp8_block $s"; timeout 150 mpirun --allow-run-as-root --oversubscribe -np 8 -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH .carry/bin/moe run --backend grouped --model qwen3-30b-a3b --quant fp8_block --tokens 1001 --communication $s 2>&1 | grep -E "chosen\]|oracle check|error" | head -3; done
