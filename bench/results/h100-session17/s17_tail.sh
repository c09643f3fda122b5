#!/usr/bin/env bash
# Seventeenth session, run 2: MOE_GROUPED_TAIL=0/1/2 in one binary (moe_tail of the diag
# commit) and main's moe, alternated; then ncu of FC1 / FC2 at DeepSeek-V3 4096, modes 0 and 2.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name --format=csv,noheader
run() {  # tag binary env...
  local tag=$1 bin=$2; shift 2
  echo "== $tag"
  env "$@" timeout 200 $b/$bin bench --models qwen3-30b-a3b,deepseek-v3 --tokens 4096 --quant fp8_block \
    --weight-pool 8 --reps 30 --no-peer --out $out/tail_${tag}.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
}
for r in 1 2; do
  run r${r}_main moe
  for m in 0 1 2; do run r${r}_mode$m moe_tail MOE_GROUPED_TAIL=$m; done
done
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for m in 0 2; do
  MOE_GROUPED_TAIL=$m timeout 150 $ncu --clock-control none -k 'regex:^sm90_grouped' --launch-skip 2 --launch-count 2 \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,lts__t_bytes.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed \
    --csv $b/moe_tail bench --models deepseek-v3 --tokens 4096 --quant fp8_block --weight-pool 1 --reps 1 --warmup 1 --no-peer > $out/ncu_mode$m.csv 2>/dev/null
  echo "== ncu mode $m"; python3 - $out/ncu_mode$m.csv <<'PY'
import csv,sys
rows=[r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
h=rows[0]; i={k:h.index(k) for k in ('ID','Metric Name','Metric Value')}
for r in rows[1:]: print(r[i['ID']], r[i['Metric Name']], r[i['Metric Value']])
PY
done
cd $out && tar czf tail.tgz tail_*.json ncu_*.csv && rm -f tail_*.json ncu_*.csv
