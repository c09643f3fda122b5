#!/usr/bin/env bash
# Nineteenth session, run 14: the paired tile's consumer K loop unrolled by the ring where the
# units' K blocks are a multiple of the stages (moe_unroll: stage indices and descriptors constant)
# against main (moe_main). Tests and sanitizers with the 128 tile forced, A/B alternated, ncu.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|RACECHECK SUMMARY" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
F='GroupedFp8.PartialBlocks*:GroupedFp8.OddWeightTileCounts:GroupedFp8Gemm*'
TOM="MOE_GROUPED_TOKENS_ON_M=1 MOE_GROUPED_BLOCK_N=128"
if [ "${TESTS:-1}" = 1 ]; then
step tests 150 $t
step tokens_on_m 100 $TOM $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step synccheck_tom 150 $TOM $san --tool synccheck --error-exitcode 9 $t --gtest_filter="$F"
step racecheck_tom 200 $TOM $san --tool racecheck --error-exitcode 9 $t --gtest_filter='GroupedFp8.OddWeightTileCounts:GroupedFp8.PartialBlocks*'
step memcheck_tom 150 $TOM $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$F"
fi
for r in $(seq ${ROUNDS:-2}); do for v in ${VARIANTS:-moe_main moe_unroll}; do
  for mt in ${CASES:-qwen3-30b-a3b:512,2048,4096,16384 deepseek-v3:512,4096,16384}; do
    m=${mt%%:*}; tk=${mt##*:}
    echo "== r$r $v $m"
    timeout 240 $b/$v bench --models $m --tokens $tk --quant fp8_block --weight-pool 8 --reps ${REPS:-30} \
      --no-peer --out $out/ab_${v}_${m}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  done
done; done
if [ "${NCU:-1}" = 1 ]; then
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for c in "deepseek-v3 16384" "qwen3-30b-a3b 4096" "deepseek-v3 4096"; do set -- $c
  for v in moe_main moe_unroll; do
  timeout 200 $ncu --clock-control none -k regex:^sm90_grouped --launch-skip 2 --launch-count 2 --metrics gpu__time_duration.sum,sm__cycles_elapsed.avg,dram__bytes.sum,lts__t_bytes.sum --csv \
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
    print(f"  {sys.argv[2]} {sys.argv[3]} {sys.argv[4]} {k[k.find('<'):k.find('>')+1][:56]:56s} us={m.get('gpu__time_duration.sum',0)/1e3:8.1f} Mcyc={m.get('sm__cycles_elapsed.avg',0)/1e6:7.3f} L2GB={m.get('lts__t_bytes.sum',0)/1e9:6.2f} DRAMGB={m.get('dram__bytes.sum',0)/1e9:6.2f}")
PY
  done
done
fi
cd $out && tar czf s19-unroll.tgz *.log ab_*.json ncu_* 2>/dev/null; rm -f *.log ab_*.json ncu_*
