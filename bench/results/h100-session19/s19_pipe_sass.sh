#!/usr/bin/env bash
# Nineteenth session, run 14: stall samples per SASS instruction of wgmma_rate's ss-pipeline and
# ss-pipeline+scales kernels (as the grouped GEMM's in sass-stalls-main.tgz).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
mkdir -p $out/sass
for k in 'pipe_kernel<false, 0>' 'pipe_kernel<true, 0>'; do
  tag=$(echo "$k" | tr -dc 'a-z0-9')
  timeout 120 $ncu --clock-control none -k "regex:pipe_kernel" \
    --launch-skip $([ "$tag" = pipekernelfalse0 ] && echo 1 || echo 3) --launch-count 1 \
    --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \
    .carry/bin/wgmma_rate 4096 compute > $out/sass/$tag.csv 2> $out/sass/$tag.err
  echo "$k: exit $?, $(wc -l < $out/sass/$tag.csv) lines, $(head -c 300 $out/sass/$tag.csv | tr '\n' ' ' | cut -c1-200)"
done
cd $out && tar czf sass-pipe.tgz sass && rm -rf sass
