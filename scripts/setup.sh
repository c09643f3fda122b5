#!/usr/bin/env bash
# Installs what MoE Engine needs to build and test, from Debian's packages, when missing.
# Idempotent and quiet when everything is present. The CUDA toolkit is optional: without it
# the CPU-only configuration builds.
set -euo pipefail

packages=(
  cmake ninja-build g++ make pkg-config ccache clang-format
  nlohmann-json3-dev libcli11-dev libgtest-dev
  openmpi-bin libopenmpi-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -ne 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Python module (nanobind) and its tests. Without them the module is not built and its
# tests skip with a message; a failed install is not fatal.
py=$(command -v python3 || true)
if [ -n "$py" ] && ! "$py" -c 'import nanobind, pytest, numpy, scikit_build_core' 2>/dev/null; then
  echo "setup: pip install nanobind scikit-build-core pytest numpy"
  "$py" -m pip install --quiet nanobind scikit-build-core pytest numpy ||
    echo "setup: pip install failed: the Python module and its tests will be skipped"
fi

if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null; then
  echo "setup: ok (CUDA toolkit found: GPU backends will build)"
else
  echo "setup: ok (no CUDA toolkit: CPU-only configuration)"
fi
