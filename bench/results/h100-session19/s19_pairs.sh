#!/usr/bin/env bash
# Nineteenth session, run 2: the 128-token tokens-on-M tile in 2-CTA clusters (token pairs
# sharing the weight-tile pair by TMA multicast; MOE_GROUPED_CLUSTER=2). Tests and sanitizers
# with the tile forced, then one binary alternating MOE_GROUPED_CLUSTER=1 / 2, then ncu.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
F='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
TOM="MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128"
if [ "${TESTS:-1}" = 1 ]; then
step pairs 100 MOE_GROUPED_CLUSTER=2 $TOM $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
if ! grep -q "^\[  PASSED" $out/pairs.log || grep -q "FAILED" $out/pairs.log; then
  tail -40 $out/pairs.log; cd $out && tar czf s19-pairs.tgz *.log; exit 1
fi
step pairs_heuristic 150 MOE_GROUPED_CLUSTER=2 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*:*LargeTokenCounts*:*PrefillTakes*'
step memcheck_pairs 150 MOE_GROUPED_CLUSTER=2 $TOM $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$F"
step synccheck_pairs 150 MOE_GROUPED_CLUSTER=2 $TOM $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$F"
step racecheck_pairs 200 MOE_GROUPED_CLUSTER=2 $TOM $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.OddWeightTileCounts:GroupedFp8.PartialBlocks*'
fi
for r in $(seq ${ROUNDS:-2}); do for cl in 1 2; do
  for mt in ${CASES:-qwen3-30b-a3b:2048,4096,16384 deepseek-v3:4096,16384}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r cluster $cl $m"
    MOE_GROUPED_CLUSTER=$cl timeout 240 $b/moe bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps ${REPS:-30} \
      --no-peer --out $out/ab_c${cl}_${m}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
if [ "${NCU:-1}" = 1 ]; then
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M=gpu__time_duration.sum,sm__cycles_elapsed.avg,sm__cycles_elapsed.avg.per_second,l1tex__m_xbar2l1tex_read_bytes.sum,lts__t_bytes.sum,dram__bytes.sum,sm__inst_executed_pipe_tensor_op_gmma.sum,launch__grid_size
for c in "deepseek-v3 16384" "qwen3-30b-a3b 4096" "deepseek-v3 4096"; do set -- $c
  for cl in 1 2; do
  MOE_GROUPED_CLUSTER=$cl timeout 200 $ncu --clock-control none -k regex:^sm90_grouped --launch-skip 2 --launch-count 2 --metrics $M --csv \
    $b/moe bench --models $1 --tokens $2 --quant fp8_block --weight-pool 1 --reps 1 --warmup 1 --no-peer > $out/ncu_c${cl}_$1_$2.csv 2>$out/ncu_c${cl}_$1_$2.err
  echo "ncu $1 $2 cluster $cl exit $?"
  done
done
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
    for (i,k),m in d.items():
        t=m.get("gpu__time_duration.sum",0)/1e3; cyc=m.get("sm__cycles_elapsed.avg",1); hz=m.get("sm__cycles_elapsed.avg.per_second",0)
        x=m.get("l1tex__m_xbar2l1tex_read_bytes.sum",0)
        print(f"  {k[k.find('<'):k.find('>')+1][:60]:60s} us={t:8.1f} GHz={hz/1e9:4.2f} xbar B/clk/SM={x/cyc/132:5.1f} L2 GB={m.get('lts__t_bytes.sum',0)/1e9:6.2f} DRAM GB={m.get('dram__bytes.sum',0)/1e9:6.2f} grid={m.get('launch__grid_size',0):.0f}")
PY
fi
cd $out && tar czf s19-pairs.tgz *.log ab_*.json ncu_* 2>/dev/null; rm -f *.log ab_*.json ncu_*
