#!/usr/bin/env bash
# Eighteenth session, run 4: per-kernel times (ncu) of main's moe and the new moe.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for v in moe_main moe; do for mt in ${CASES:-qwen3-30b-a3b:4096 deepseek-v3:4096}; do
  m=${mt%%:*}; tk=${mt##*:}
  timeout 200 "$ncu" --clock-control none -k 'regex:^(route|plan|quantize_|sm90_grouped|finalize)' \
    --metrics gpu__time_duration.sum,dram__bytes.sum,lts__t_bytes.sum --csv \
    $b/$v bench --models $m --tokens $tk --reps 1 --warmup 1 --no-peer --weight-pool 8 --quant fp8_block > $out/ncu_${v}_${m}_$tk.csv 2>/dev/null
  echo "== $v $m $tk"; python3 - $out/ncu_${v}_${m}_$tk.csv <<'PY'
import csv,sys,collections,re
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
h=rows[0]; ik=h.index("Kernel Name"); im=h.index("Metric Name"); iv=h.index("Metric Value"); iid=h.index("ID")
d=collections.OrderedDict()
for r in rows[1:]:
    n=r[ik]; t=re.search(r"<(.*)>", n); base=n.split("<")[0].split("(")[0]
    d.setdefault((r[iid], base+"<"+(t.group(1)[28:70] if t else "")+">"),{})[r[im]]=float(r[iv].replace(",",""))
agg=collections.OrderedDict()
for (i,k),m in d.items():
    a=agg.setdefault(k,[0,0,0,0]); a[0]+=1; a[1]+=m.get("gpu__time_duration.sum",0); a[2]+=m.get("dram__bytes.sum",0); a[3]+=m.get("lts__t_bytes.sum",0)
for k,a in agg.items(): print(f"  {k[:70]:70s} n={a[0]} us={a[1]/a[0]/1e3:8.1f} dramMB={a[2]/a[0]/1e6:8.1f} l2MB={a[3]/a[0]/1e6:8.1f}")
PY
done; done
cd $out && tar czf s18-ncu.tgz ncu_*.csv && rm -f ncu_*.csv
