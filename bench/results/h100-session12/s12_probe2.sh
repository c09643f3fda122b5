#!/usr/bin/env bash
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
.carry/bin/wgmma_rate 2048 2>&1 | tee $out/wgmma_rate2.txt | head -14
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M=gpu__time_duration.sum,sm__cycles_elapsed.avg,lts__t_bytes.sum,lts__t_bytes.sum.pct_of_peak_sustained_elapsed,dram__bytes.sum,sm__inst_executed_pipe_tensor_op_gmma.sum
for c in 1 2; do
  MOE_GROUPED_CLUSTER=$c timeout 200 $ncu --clock-control none -k regex:^sm90_grouped --launch-skip 2 --launch-count 2 --metrics $M --csv \
      .carry/bin/moe bench --models deepseek-v3 --tokens 4096 --quant fp8_block --weight-pool 1 --reps 1 --warmup 1 --no-peer > $out/ncu_c$c.csv 2>/dev/null
  echo "== cluster $c"; python3 - $out/ncu_c$c.csv <<'PY'
import csv,sys
rows=[r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
h=rows[0]; i={k:h.index(k) for k in ('ID','Metric Name','Metric Value')}
for r in rows[1:]: print(r[i['ID']], r[i['Metric Name']], r[i['Metric Value']])
PY
done
cd $out && tar czf probe2.tgz ncu_c*.csv wgmma_rate2.txt && rm -f ncu_c*.csv
