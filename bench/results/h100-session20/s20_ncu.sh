#!/usr/bin/env bash
# Twentieth session, run 5: which kernels the fused group quantization slowed (ncu per kernel,
# DeepSeek-V3 and Qwen3-30B-A3B at 512 tokens; main, gq2, relaxed).
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for c in ${NCU_CASES:-"deepseek-v3 512" "qwen3-30b-a3b 512"}; do set -- ${c/:/ }
  for v in ${VARIANTS:-moe_main moe_gq2}; do
  timeout 200 $ncu --clock-control none -k regex:"grouped|quantiz|finaliz|plan|route|scatter" --launch-skip 14 --launch-count 14 --metrics gpu__time_duration.sum,dram__bytes.sum,lts__t_bytes.sum --csv \
    $b/$v bench --models $1 --tokens $2 --quant fp8_block --weight-pool 1 --reps 1 --warmup 1 --no-peer > $out/ncu_${v}_$1_$2.csv 2>$out/ncu_${v}_$1_$2.err
  python3 - $out/ncu_${v}_$1_$2.csv $v $1 $2 <<'PY'
import csv,sys,collections
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
if not rows: print("empty"); sys.exit()
h=rows[0]; ik=h.index("Kernel Name"); im=h.index("Metric Name"); iv=h.index("Metric Value"); iid=h.index("ID")
d=collections.OrderedDict()
for r in rows[1:]:
    try: v=float(r[iv].replace(",",""))
    except: v=0
    d.setdefault((r[iid],r[ik]),{})[r[im]]=v
for (i,k),m in d.items():
    name=k[:k.find('(')] if '(' in k else k
    if '<' in k: name=k[:k.find('<')]+k[k.find('<'):k.find('>')+1][:60]
    print(f"  {sys.argv[2]:11s} {sys.argv[3]} {sys.argv[4]} {name[:90]:90s} us={m.get('gpu__time_duration.sum',0)/1e3:8.1f} L2GB={m.get('lts__t_bytes.sum',0)/1e9:6.3f} DRAMGB={m.get('dram__bytes.sum',0)/1e9:6.3f}")
PY
  done
done
cd $out && tar czf s20-${TAG:-ncu}.tgz ncu_* 2>/dev/null; rm -f ncu_*
