#!/usr/bin/env bash
# Builds the moe_engine Python module HERE for the device's Python (CPython 3.12, PyTorch in
# /opt/torch/.venv there) and puts it in .carry/py/moe_engine/, which python_check.sh uses on
# the device. One CMake configuration builds the library and the module, so their compile
# definitions agree (a module built on the device against this build's library crashed).
# Needs pyenv's Python 3.12 with nanobind (pip install nanobind) on this machine.
# Usage: scripts/device/build_python_module.sh   (then run scripts/device/python_check.sh there)
set -euo pipefail
py=${PYTHON312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
build=${BUILD:-build-py312}
[[ -x $py ]] || { echo "no Python 3.12 at $py (set PYTHON312)"; exit 1; }
"$py" -c 'import nanobind' 2>/dev/null || "$py" -m pip install -q nanobind
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$py" >/dev/null
ninja -C "$build" moe_engine_python
mkdir -p .carry/py/moe_engine
cp "$build"/python/moe_engine/__init__.py "$build"/python/moe_engine/_moe_engine.cpython-312-*.so \
  .carry/py/moe_engine/
echo "module in .carry/py/moe_engine (carry .carry to the device)"
