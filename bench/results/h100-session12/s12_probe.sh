#!/usr/bin/env bash
# Twelfth session probe: the tile's compute and load sides alone (wgmma_rate) and the real kernels' L2 / DRAM use.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
.carry/bin/wgmma_rate 4096 2>&1 | tee $out/wgmma_rate.txt
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M1=gpu__time_duration.sum,sm__cycles_elapsed.avg,lts__t_bytes.sum.pct_of_peak_sustained_elapsed,lts__t_sectors.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_executed_pipe_tensor_op_gmma.sum
M2=l1tex__m_xbar2l1tex_read_bytes.sum.pct_of_peak_sustained_elapsed,sm__pipe_tensor_cycles_active_realtime.avg.pct_of_peak_sustained_elapsed,lts__t_sectors_srcunit_tex.avg.pct_of_peak_sustained_elapsed
for c in "deepseek-v3 4096" "qwen3-30b-a3b 4096" "deepseek-v3 16384"; do
  set -- $c
  for m in M1 M2; do
    timeout 200 $ncu --clock-control none -k regex:^sm90_grouped --launch-skip 2 --launch-count 2 --metrics ${!m} --csv \
      .carry/bin/moe bench --models $1 --tokens $2 --quant fp8_block --weight-pool 1 --reps 1 --warmup 1 --no-peer > $out/ncu_$1_$2_$m.csv 2>$out/ncu_$1_$2_$m.err
    echo "$1 $2 $m exit $?"
  done
done
cd $out && tar czf ncu12.tgz ncu_* && rm ncu_*
