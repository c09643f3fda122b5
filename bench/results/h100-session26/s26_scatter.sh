#!/usr/bin/env bash
# Twenty-sixth session: fp8_per_tensor's input quantized at its static scale and scattered to its
# rows in one pass (quantize_scatter's kStatic kernels) against quantize_input's per-tensor
# kernel and then the gather (MOE_GROUPED_PER_TENSOR_SCATTER=0). The grouped GPU tests first,
# the changed test under memcheck, then the layer in both settings (one binary, alternated, two
# rounds) and each setting's graph timeline at Qwen3 T=1 / 4096 and DeepSeek-V3 16384.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
new='GroupedFp8.RowsInRunMoeEqualQuantizeInputBitForBit:GroupedFp8.LayerCapturedInACudaGraph'
# PART=checks: the tests and memcheck; PART=ab: the layer and the timelines (two device calls).
if [ "${PART:-checks}" = checks ]; then
step tests 300 $t
step fp8_pair_kernel 200 MOE_GROUPED_SCATTER_PAIR_FROM=1 MOE_GROUPED_SCATTER_ROWS=0 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step fp8_rows_kernel 200 MOE_GROUPED_SCATTER_PAIR_FROM=1 $t --gtest_filter='GroupedFp8*:*GroupedFp8Family*'
step memcheck_new 300 $san --tool memcheck --error-exitcode 9 $t --gtest_filter="$new"
cd $out && tar czf s26-checks.tgz *.log && rm -f *.log
exit 0
fi
for r in 1 2; do for s in 1 0; do
  echo "== round $r MOE_GROUPED_PER_TENSOR_SCATTER=$s"
  MOE_GROUPED_PER_TENSOR_SCATTER=$s timeout 200 $b/moe bench --models qwen3-30b-a3b,deepseek-v3 \
    --tokens ${TOKENS:-1,8,64,512,4096,16384} --quant fp8_per_tensor --weight-pool 1 --reps 15 --no-peer \
    --out $out/ab-$s-$r.json 2>&1 | grep -E "^(qwen|deep)|FAILED" | cut -c1-80
done; done
for v in "qwen3-30b-a3b 1" "qwen3-30b-a3b 4096" "deepseek-v3 16384"; do set -- $v; for s in 1 0; do
  echo "== trace $1 T=$2 MOE_GROUPED_PER_TENSOR_SCATTER=$s"
  MOE_GROUPED_PER_TENSOR_SCATTER=$s CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_$1_$2_$s.csv \
    timeout 120 $b/moe bench --models $1 --tokens $2 --quant fp8_per_tensor --weight-pool 1 --reps 15 --no-peer \
    2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_$1_$2_$s.csv 15
done; done
cd $out && tar czf s26-traces.tgz tr_*.csv && rm -f tr_*.csv
