# Sourced by the 2-GPU device scripts: NCCL as built (PyTorch's 2.28.9), NVLink multicast off,
# the MPI launch line for 2 ranks ($mpi), the carried binaries ($b), the output folder ($out).
out=${OUT:-/tmp/out}
export NCCL_NVLS_ENABLE=0 GTEST_COLOR=no
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib:/usr/local/cuda/lib64:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}
mpi="mpirun --allow-run-as-root --oversubscribe -np 2 -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH -x GTEST_COLOR"
b=.carry/bin
nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c
