#!/usr/bin/env bash
# Builds the libFuzzer target of the safetensors header parser with Debian's clang
# (-fsanitize=fuzzer,address,undefined) and runs it for N seconds on a copy of fuzz/corpus.
#   scripts/fuzz.sh [SECONDS]      (default 60; the build goes to build-fuzz/)
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${root}/build-fuzz"
clang="${CLANGXX:-clang++}"
command -v "${clang}" >/dev/null || { echo "fuzz.sh: ${clang} not found (apt-get install clang)" >&2; exit 1; }
mkdir -p "${out}/corpus"
"${clang}" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"${root}/include" -I"${root}/src" \
  "${root}/fuzz/safetensors_header_fuzz.cc" "${root}/src/weights/safetensors.cc" \
  "${root}/src/core/errors.cc" "${root}/src/core/dtype.cc" "${root}/src/core/tensor.cc" "${root}/src/core/cuda_allocator_stub.cc" \
  -o "${out}/safetensors_header_fuzz"
cp -n "${root}"/fuzz/corpus/* "${out}/corpus/" 2>/dev/null || true
# The corpus copy grows with what the fuzzer finds; fuzz/corpus stays as committed.
"${out}/safetensors_header_fuzz" -max_total_time="${seconds}" -max_len=4096 \
  -print_final_stats=1 "${out}/corpus"
