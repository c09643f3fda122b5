#!/usr/bin/env bash
# cuobjdump and nvdisasm for reading SASS on this machine (the CUDA image here ships nvcc and
# ptxas only): NVIDIA's pip wheels, unpacked under .cache/sass-tools. Prints the bin directory.
# Usage: PATH=$(scripts/get_sass_tools.sh):$PATH; cuobjdump -sass build-dev/.../grouped_gemm_fp8.cu.o
set -euo pipefail
dir=$(cd "$(dirname "$0")/.." && pwd)/.cache/sass-tools
if [ ! -x "$dir/nvidia/cu13/bin/cuobjdump" ]; then
  mkdir -p "$dir/wheels"
  python3 -m pip download --quiet --no-deps -d "$dir/wheels" nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm >&2
  for w in "$dir"/wheels/*.whl; do python3 -m zipfile -e "$w" "$dir"; done
  chmod +x "$dir"/nvidia/cu13/bin/* 2>/dev/null || true
fi
echo "$dir/nvidia/cu13/bin"
