#!/usr/bin/env bash
# Nineteenth session, run 1: does cuBLASLt's FP8 GEMM take in more than the ~32 B/cycle/SM the
# twelfth session measured with bulk copies? Its kernel (tile, cluster), clock, bytes into the
# SMs, against the grouped FC1 / FC2 at DeepSeek-V3 16384 and Qwen3-30B-A3B 4096; the SM clock
# sampled by nvidia-smi while the layer runs without a profiler.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv,noheader
M=gpu__time_duration.sum,sm__cycles_elapsed.avg,sm__cycles_elapsed.avg.per_second,l1tex__m_xbar2l1tex_read_bytes.sum,lts__t_bytes.sum,dram__bytes.sum,sm__inst_executed_pipe_tensor_op_gmma.sum,launch__grid_size,launch__block_size,launch__registers_per_thread
# 1. cuBLASLt's e4m3 8192^3 (the roofline's, every heuristic algorithm) and bf16
timeout 200 $ncu --clock-control none -k 'regex:gemm|nvjet|xmma|cutlass|Kernel' --launch-count 200 --metrics $M --csv \
  $b/moe bench --models qwen3-30b-a3b --tokens 1 --quant fp8_block --weight-pool 1 --reps 1 --warmup 1 --no-peer > $out/ncu_cublas.csv 2> $out/ncu_cublas.err
echo "cublas ncu exit $?"
# 2. the grouped GEMMs
for c in "deepseek-v3 16384" "qwen3-30b-a3b 4096" "deepseek-v3 4096"; do set -- $c
  timeout 200 $ncu --clock-control none -k regex:^sm90_grouped --launch-skip 2 --launch-count 2 --metrics $M --csv \
    $b/moe bench --models $1 --tokens $2 --quant fp8_block --weight-pool 1 --reps 1 --warmup 1 --no-peer > $out/ncu_$1_$2.csv 2>$out/ncu_$1_$2.err
  echo "$1 $2 exit $?"
done
# 3. clocks while the layer runs unprofiled
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv -lms 20 > $out/clocks.csv &
sp=$!
for c in "deepseek-v3 16384 1" "qwen3-30b-a3b 4096 8"; do set -- $c
  echo "== $1 $2 start $(date +%s.%N)"
  timeout 120 $b/moe bench --models $1 --tokens $2 --quant fp8_block --weight-pool $3 --reps 30 --no-peer 2>&1 | grep -E "^(qwen|deep)|roofline|cuBLAS" | cut -c1-150
  echo "== $1 $2 end $(date +%s.%N)"
done
kill $sp
python3 bench/tools/ncu_table.py $out/ncu_cublas.csv 2>/dev/null | head -5 || true
python3 - $out <<'PY'
import csv,sys,glob,os,collections
for f in sorted(glob.glob(sys.argv[1]+"/ncu_*.csv")):
    rows=[r for r in csv.reader(open(f)) if len(r)>10]
    if not rows: print(f,"empty"); continue
    h=rows[0]; ik=h.index("Kernel Name"); im=h.index("Metric Name"); iv=h.index("Metric Value"); iid=h.index("ID")
    d=collections.OrderedDict()
    for r in rows[1:]:
        try: v=float(r[iv].replace(",",""))
        except: v=0
        d.setdefault((r[iid],r[ik]),{})[r[im]]=v
    print("==",os.path.basename(f))
    seen=collections.OrderedDict()
    for (i,k),m in d.items():
        t=m.get("gpu__time_duration.sum",0)/1e3; cyc=m.get("sm__cycles_elapsed.avg",1); hz=m.get("sm__cycles_elapsed.avg.per_second",0)
        x=m.get("l1tex__m_xbar2l1tex_read_bytes.sum",0); g=m.get("sm__inst_executed_pipe_tensor_op_gmma.sum",0)
        key=k[:150]
        line=f"  us={t:9.1f} GHz={hz/1e9:5.2f} xbar2sm B/clk/SM={x/cyc/132:5.1f} L2 GB={m.get('lts__t_bytes.sum',0)/1e9:6.2f} DRAM GB={m.get('dram__bytes.sum',0)/1e9:6.2f} gmma={g:.3g} grid={m.get('launch__grid_size',0):.0f} blk={m.get('launch__block_size',0):.0f} regs={m.get('launch__registers_per_thread',0):.0f}"
        seen.setdefault(key,[]).append(line)
    for k,ls in seen.items():
        print(" ",k); [print(l) for l in ls[:3]]
        if len(ls)>3: print(f"   ... {len(ls)} launches")
PY
cd $out && tar czf s19-probe.tgz ncu_* clocks.csv && rm -f ncu_*.csv
