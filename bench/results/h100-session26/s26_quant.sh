#!/usr/bin/env bash
# Twenty-sixth session: the per-tensor quantization kernel (quantize_input's, for expert
# parallelism's post-quant dispatch and the dense backend) at 8 elements a thread. The dense GPU
# tests and the quantization tests under memcheck; the grouped fp8 tests on quantize_input's
# path (MOE_GROUPED_PER_TENSOR_SCATTER=0); then that path's graph timeline with the base binary
# (moe_base: ad462f5, one element a thread) and the new one alternated, and the dense backend's
# fp8_per_tensor layer with both.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
step dense_tests 300 $b/moe_gpu_dense_tests
step memcheck_quant 200 $san --tool memcheck --error-exitcode 9 $b/moe_gpu_dense_tests --gtest_filter='Fp8QuantKernels.*'
step grouped_fp8_quantize_input 200 MOE_GROUPED_PER_TENSOR_SCATTER=0 $b/moe_gpu_grouped_tests --gtest_filter='GroupedFp8*:*GroupedFp8Family*:-GroupedFp8.RowsInRunMoeEqualQuantizeInputBitForBit'
for v in "qwen3-30b-a3b 4096" "deepseek-v3 16384"; do set -- $v; for bin in moe_base moe; do
  echo "== trace $1 T=$2 $bin MOE_GROUPED_PER_TENSOR_SCATTER=0"
  MOE_GROUPED_PER_TENSOR_SCATTER=0 CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_$1_$2_$bin.csv \
    timeout 120 $b/$bin bench --models $1 --tokens $2 --quant fp8_per_tensor --weight-pool 1 --reps 15 --no-peer \
    2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_$1_$2_$bin.csv 15 | grep -E "quant|first start"
done; done
for r in 1 2; do for bin in moe_base moe; do
  echo "== dense round $r $bin"
  timeout 150 $b/$bin bench --backend dense --models qwen3-30b-a3b,deepseek-v3 --tokens 512,4096 --quant fp8_per_tensor \
    --weight-pool 1 --reps 15 --no-peer --out $out/dense-$bin-$r.json 2>&1 | grep -E "^(qwen|deep)|FAILED" | cut -c1-80
done; done
cd $out && tar czf s26-quant.tgz *.log tr_*.csv && rm -f *.log tr_*.csv
