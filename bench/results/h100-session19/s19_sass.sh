#!/usr/bin/env bash
# Nineteenth session, run 3: stall samples per SASS instruction of main's prefill GEMMs.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
SKIP=2 bash .carry/bin/sass_profile.sh deepseek-v3 16384 qwen3-30b-a3b 4096
SKIP=3 KERNEL_TAG=fc2 bash .carry/bin/sass_profile.sh deepseek-v3 16384 qwen3-30b-a3b 4096
