#!/usr/bin/env bash
# Twenty-fifth session: the layer's graph timeline (kernel_trace.cc) of fp8_per_tensor's prefill
# with MOE_GROUPED_PER_TENSOR_ON_M=1 (tokens on M, no promotion) and =block alternated, with
# the SM clock and power sampled beside it (nvidia-smi, 50 ms).
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
for m in ${MODELS:-deepseek-v3}; do for t in ${TOKENS:-16384}; do for r in 1 2; do for mode in 1 block; do
  echo "== $m T=$t round $r MOE_GROUPED_PER_TENSOR_ON_M=$mode"
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader -lms 50 > $out/smi_${m}_${t}_${mode}_$r.csv &
  smi=$!
  MOE_GROUPED_PER_TENSOR_ON_M=$mode CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${m}_${t}_${mode}_$r.csv \
    $b/moe bench --models $m --tokens $t --quant fp8_per_tensor --weight-pool 1 --reps ${REPS:-15} --no-peer \
    2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  kill $smi
  python3 scripts/kernel_timeline.py $out/tr_${m}_${t}_${mode}_$r.csv 15
  awk -F', ' '{gsub(/ MHz| W/,""); if ($2+0 > 1000) {n++; c+=$2; p+=$4}} END {if (n) printf "   sm clock %.0f MHz, power %.0f W (%d samples over 1 GHz)\n", c/n, p/n, n}' $out/smi_${m}_${t}_${mode}_$r.csv
done; done; done; done
cd $out && tar czf s25-traces.tgz tr_*.csv smi_*.csv && rm -f tr_*.csv smi_*.csv
