#!/usr/bin/env bash
# Twenty-fifth session: why the per-tensor tokens-on-M FC1 without promotion is faster alone
# (ncu) but slower in the layer at DeepSeek-V3 16384 tokens. (1) The SM clock and power under
# the timed loop (100 replays, nvidia-smi every 20 ms, the samples above 250 W); (2) ncu of the
# layer's kernels without cache flushes between them (--cache-control none).
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
m=${MODEL:-deepseek-v3} t=${TOKENS:-16384}
for r in 1 2; do for mode in 1 block; do
  echo "== $m T=$t round $r MOE_GROUPED_PER_TENSOR_ON_M=$mode"
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv,noheader -lms 20 > $out/smi_${mode}_$r.csv &
  smi=$!
  MOE_GROUPED_PER_TENSOR_ON_M=$mode $b/moe bench --models $m --tokens $t --quant fp8_per_tensor --weight-pool 1 --reps 100 --no-peer \
    2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  kill $smi
  awk -F', ' '{p=$4; gsub(/ W/,"",p); c=$2; gsub(/ MHz/,"",c); if (p+0 > 250) {n++; cs+=c; ps+=p; if (c < cmin || cmin == 0) cmin = c; th[$6]++}} END {if (n) {printf "   under load: sm clock mean %.0f min %d MHz, power %.0f W (%d samples); throttle reasons:", cs/n, cmin, ps/n, n; for (k in th) printf " %s x%d", k, th[k]; print ""}}' $out/smi_${mode}_$r.csv
done; done
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for mode in 1 block; do
  MOE_GROUPED_PER_TENSOR_ON_M=$mode "$ncu" --clock-control none --cache-control none -k 'regex:^(gather|sm90_grouped)' \
    --metrics gpu__time_duration.sum,dram__bytes.sum,lts__t_bytes.sum,sm__cycles_elapsed.avg.per_second \
    --csv $b/moe bench --models $m --tokens $t --reps 1 --warmup 1 --no-peer --weight-pool 1 --quant fp8_per_tensor \
    > $out/ncu_nocache_$mode.csv 2>/dev/null
  echo "== ncu --cache-control none, mode $mode"; python3 bench/tools/ncu_table.py $out/ncu_nocache_$mode.csv | head -4
  grep -h "sm__cycles_elapsed.avg.per_second" $out/ncu_nocache_$mode.csv | grep sm90 | head -2 | awk -F'","' '{print "   clock", $NF}'
done
cd $out && tar czf s25-power.tgz smi_*.csv ncu_nocache_*.csv && rm -f smi_*.csv
