#!/usr/bin/env bash
# Eighteenth session, run 2: where the unit-output variant's time goes. Variants (name:env:binary):
# main; new (kUnitOut); nocopy (kUnitOut, the store warp copies nothing: wrong y, timing only);
# old3 (main's FC2 epilogue on a 3-stage ring). Layer times alternated, then ncu per kernel.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
V=${VARIANTS:-"main:X=0:moe_main new:X=0:moe nocopy:MOE_GROUPED_UNIT_OUT=1:moe_diag old3:MOE_GROUPED_UNIT_OUT=0:moe_diag"}
for r in $(seq ${ROUNDS:-2}); do for spec in $V; do
  name=${spec%%:*}; rest=${spec#*:}; envv=${rest%%:*}; bin=${rest#*:}
  for mt in ${CASES:-qwen3-30b-a3b:2048,4096,16384 deepseek-v3:4096}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r $name $m"
    env $envv timeout 240 $b/$bin bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps ${REPS:-30} \
      --no-peer --out $out/ab_${name}_${m}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-60
  done
done; done
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for spec in $V; do
  name=${spec%%:*}; rest=${spec#*:}; envv=${rest%%:*}; bin=${rest#*:}
  for mt in ${NCU_CASES:-qwen3-30b-a3b:4096}; do
    m=${mt%%:*}; tk=${mt##*:}
    env $envv timeout 120 "$ncu" --clock-control none -k 'regex:^sm90_grouped' --metrics gpu__time_duration.sum,dram__bytes.sum,lts__t_bytes.sum \
      --csv $b/$bin bench --models $m --tokens $tk --reps 1 --warmup 1 --no-peer --weight-pool 8 --quant fp8_block > $out/ncu_${name}_${m}_$tk.csv 2>/dev/null
    echo "ncu $name $m $tk:"; python3 - $out/ncu_${name}_${m}_$tk.csv <<'PY'
import csv,sys,collections
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
if not rows: print("  no rows"); sys.exit()
h=rows[0]; ik=h.index("Kernel Name"); im=h.index("Metric Name"); iv=h.index("Metric Value"); iid=h.index("ID")
d=collections.OrderedDict()
for r in rows[1:]:
    import re
    n=r[ik]; t=re.search(r"<(.*)>", n); key=(r[iid], (t.group(1) if t else n)[:110])
    d.setdefault(key,{})[r[im]]=r[iv]
for (i,k),m in d.items(): print("  ",i,k,{a.split("__")[1][:12]:b for a,b in m.items()})
PY
  done
done
cd $out && tar czf s18-bisect.tgz ab_*.json ncu_*.csv 2>/dev/null && rm -f ab_*.json ncu_*.csv
