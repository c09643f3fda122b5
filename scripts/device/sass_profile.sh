#!/usr/bin/env bash
# Where a grouped GEMM's warps stall, instruction by instruction (ncu's PC sampling, SASS
# view), for one kernel launch of a `moe bench` case. Writes one CSV per case, packed into
# sass-<time>.tgz under $OUT (the device returns few files).
# Usage: [BIN=moe] [QUANT=fp8_block] [SKIP=2] [KERNEL=regex] scripts/device/sass_profile.sh MODEL TOKENS [MODEL TOKENS ...]
#   SKIP: launches of the kernel skipped first (grouped GEMM: FC1 of the second forward 2, its FC2 3)
#   KERNEL: ncu's kernel-name regex (default ^sm90_grouped; e.g. ^route for the router)
#   NCU_EXTRA: more ncu options (e.g. "--warp-sampling-interval 0" for a short kernel: a sample every 32 cycles)
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
mkdir -p "$out/sass"
while [ $# -ge 2 ]; do
  model=$1 tokens=$2
  shift 2
  f="$out/sass/${model}_${tokens}_${KERNEL_TAG:-gemm}_skip${SKIP:-2}.csv"
  timeout 150 "$ncu" --clock-control none ${NCU_EXTRA:-} -k "regex:${KERNEL:-^sm90_grouped}" --launch-skip ${SKIP:-2} --launch-count 1 \
    --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \
    .carry/bin/${BIN:-moe} bench --models "$model" --tokens "$tokens" --quant ${QUANT:-fp8_block} \
    --weight-pool 1 --reps 1 --warmup 1 --no-peer > "$f" 2> "$f.err"
  echo "$model T=$tokens: exit $?, $(wc -l < "$f") lines"
done
tar czf "$out/sass-$(date +%H%M%S).tgz" -C "$out" sass && rm -rf "$out/sass"  # one archive per call
