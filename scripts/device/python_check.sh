#!/usr/bin/env bash
# The Python module's GPU tests (python/tests/test_gpu.py) on the GPU machine, with the module
# built here by scripts/device/build_python_module.sh and carried in .carry/py/moe_engine/ (its
# Debian-only libraries in .carry/lib).
#
# Usage, from the repository root on the GPU machine:
#   scripts/device/python_check.sh            # logs into ${OUT:-/tmp/out}/python_gpu*.log
#
# Steps: print the Python, PyTorch and GPU; `import moe_engine` (fails fast, listing any library
# ldd cannot find); pytest -s -q on test_gpu.py (300 s limit). When pytest dies of a signal, the
# tests rerun with -v under python -X faulthandler to name the crashing test and capture its
# Python traceback, then that test alone reruns the same way (under gdb, for the native
# backtrace, when gdb is installed). Exit status: pytest's.
set -uo pipefail

root=$PWD
out=${OUT:-/tmp/out}
mkdir -p "$out"
nccl=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib
libs="/usr/local/cuda/lib64:$nccl:$root/.carry/lib"
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$root/.carry/py"
py=/opt/torch/.venv/bin/python
[[ -x $py ]] || py=$(command -v python3)

"$py" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| torch CUDA", torch.version.cuda, "| GPU visible:", torch.cuda.is_available())'
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || echo "nvidia-smi failed"

if ! "$py" -c 'import moe_engine as me; print("moe_engine", me.__version__, me.__file__)'; then
  echo "FAIL: import moe_engine (PYTHONPATH=$PYTHONPATH); libraries not found, if any:"
  ldd "$root"/.carry/py/moe_engine/_moe_engine*.so | grep "not found"
  exit 1
fi

tests=python/tests/test_gpu.py
pytest_args=(-s -p no:cacheprovider)
timeout 300 "$py" -m pytest "${pytest_args[@]}" -q "$tests" 2>&1 | tee "$out/python_gpu.log"
rc=${PIPESTATUS[0]}
echo "pytest exit status: $rc"
if ((rc > 128 && rc != 124)); then
  echo "=== pytest died of signal $((rc - 128)): rerunning with -v under -X faulthandler"
  timeout 300 "$py" -X faulthandler -m pytest "${pytest_args[@]}" -v -x "$tests" 2>&1 |
    tee "$out/python_gpu_faulthandler.log"
  crashed=$(grep -o "test_gpu.py::[][A-Za-z0-9_.-]*" "$out/python_gpu_faulthandler.log" | tail -1)
  if [[ -n $crashed ]]; then
    echo "=== the test that crashed: $crashed, alone"
    run=("$py" -X faulthandler -m pytest "${pytest_args[@]}" -v "python/tests/$crashed")
    # Under gdb when the machine has it: the native backtrace of every thread as well.
    command -v gdb >/dev/null &&
      run=(gdb -q -batch -iex "set debuginfod enabled off" -ex run -ex "thread apply all bt"
        --args "${run[@]}")
    timeout 300 "${run[@]}" 2>&1 | tee "$out/python_gpu_crash.log"
  fi
fi
exit "$rc"
