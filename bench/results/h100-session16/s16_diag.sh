#!/usr/bin/env bash
# Sixteenth session: the resident test fixed, racecheck control on the paired tile, and the
# paired tile at 3 stages (moe_p3) against 4 stages and the resident tile.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
echo "== resident test"; timeout 120 $b/moe_gpu_grouped_tests --gtest_filter='*Resident*' 2>&1 | grep -E '^\[  |Failure|Expected|Which|error' | head -20
echo "== racecheck control (paired tile, every tile width)"
timeout 200 $san --tool racecheck $b/moe_gpu_grouped_tests --gtest_filter='*BlockScaledEveryTileWidth*' > $out/race_control.log 2>&1; echo rc=$?
grep -E 'Race reported|RACECHECK SUMMARY' $out/race_control.log | sed 's/CUtensorMap_st.*//' | sort | uniq -c | head
for r in 1 2; do for v in p4 r3 p3; do
  case $v in p4) bin=moe; res=0;; r3) bin=moe; res=1;; p3) bin=moe_p3; res=0;; esac
  echo "== r$r $v"
  MOE_GROUPED_RESIDENT=$res timeout 200 $b/$bin bench --models qwen3-30b-a3b --tokens 4096,16384 --quant fp8_block \
    --weight-pool 8 --reps 30 --no-peer --out $out/d_${v}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
done; done
for v in p3 p4; do
  case $v in p4) bin=moe;; p3) bin=moe_p3;; esac
  echo "== trace $v T=4096"
  MOE_GROUPED_RESIDENT=0 CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_$v.csv \
    timeout 150 $b/$bin bench --models qwen3-30b-a3b --tokens 4096 --quant fp8_block --weight-pool 8 --reps 20 --no-peer \
    2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_$v.csv 40 | cut -c1-50 | head -12
done
cd $out && tar czf diag.tgz *.json *.csv *.log 2>/dev/null; rm -f *.json *.csv
