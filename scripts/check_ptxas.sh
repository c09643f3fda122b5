#!/usr/bin/env bash
# ptxas's verdict on the grouped GEMM kernels: recompiles their translation units (the
# commands of the build's compile_commands.json, ccache and the object output left out) with
# -Xptxas -v and fails on any register spill (but the per-tile ones of the three-consumer
# tokens-on-M variants, none inside the main loop: see below) or on ptxas's C75xx notes (wgmma serialized:
# C7520 an accumulator touched by non-wgmma code or a barrier wait on a divergent path while a
# wgmma is in flight; C7514 / C7517 / C7518 accumulator reads it cannot prove complete, e.g. a
# wgmma in flight across a loop's back edge or paths merging with different groups in
# flight). Neither is an error to nvcc; both cost the tensor cores (docs/ARCHITECTURE.md).
# Usage: scripts/check_ptxas.sh BUILD_DIR
set -euo pipefail
build=${1:?build directory with compile_commands.json}
here=$(cd "$(dirname "$0")" && pwd)
cuobjdump=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump "$here/../.cache/sass-tools/nvidia/cu13/bin/cuobjdump" 2>/dev/null | head -1 || true)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for tu in grouped_gemm_16bit.cu grouped_gemm_fp8.cu; do
  cmd=$(python3 - "$build/compile_commands.json" "$tu" <<'PY'
import json, shlex, sys
for e in json.load(open(sys.argv[1])):
    if e["file"].endswith("/" + sys.argv[2]):
        args = shlex.split(e["command"])
        if args and args[0].endswith("ccache"):
            args = args[1:]
        if "-o" in args:
            i = args.index("-o")
            del args[i:i + 2]
        print("cd " + shlex.quote(e["directory"]) + " && " + shlex.join(args))
        break
PY
)
  if [ -z "$cmd" ]; then
    echo "check_ptxas: no compile command for $tu in $build (built without CUDA?)"
    continue
  fi
  log="$tmp/$tu.log"
  bash -c "$cmd -Xptxas -v -o $tmp/$tu.o" > "$log" 2>&1 || { cat "$log"; exit 1; }
  kernels=$(grep -c "Compiling entry function" "$log" || true)
  serial=$(grep -cE "C75[0-9][0-9]" "$log" || true)
  # Kernels with spills: "name bytes". The three-consumer tokens-on-M variants (512 threads,
  # 160 registers each after setmaxnreg: 128 hold the accumulator and the promoted total) and
  # the two-consumer ones with two weight tiles a stage (232 registers: 192 hold the
  # accumulator and two totals) may spill a few per-tile values (<= 128 bytes), never inside
  # the wgmma main loop: checked on the SASS (scripts/sass_loop_spills.py) where cuobjdump is
  # at hand, else by the byte budget.
  spilled=$(awk '/Compiling entry function/ {match($0, /_Z[A-Za-z0-9_]*/); k = substr($0, RSTART, RLENGTH)}
                 /bytes spill stores/ && !/ 0 bytes spill stores, 0 bytes spill loads/ {print k, $5}' "$log")
  spills=0
  while read -r name bytes; do
    [ -z "$name" ] && continue
    if [[ "$name" == *Li192ELi4E*Lb1EEEv* || "$name" == *Li128ELi4E*Lb1EEEv* ]] &&
       [ "$bytes" -le 128 ]; then
      if [ -n "$cuobjdump" ]; then
        if ! "$cuobjdump" -sass -fun "$name" "$tmp/$tu.o" | python3 "$here/sass_loop_spills.py"; then
          echo "  $name: local memory inside its main loop"
          spills=$((spills + 1))
        fi
      fi
      continue
    fi
    echo "  $name: $bytes bytes of spill stores"
    spills=$((spills + 1))
  done <<< "$spilled"
  echo "$tu: $kernels kernels, $spills with spills (outside the allowed per-tile ones), $serial with serialized wgmma"
  if [ "$spills" != 0 ] || [ "$serial" != 0 ]; then
    grep -E "Compiling entry|C75[0-9][0-9]" "$log" | grep -B1 -E "C75[0-9][0-9]" | head -20
    status=1
  fi
done
exit $status
