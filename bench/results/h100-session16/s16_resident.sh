#!/usr/bin/env bash
# Sixteenth session: FC2's resident token tile -- tests, sanitizers, A/B (MOE_GROUPED_RESIDENT=0/1),
# CUPTI timelines. OUT must be set.
b=$PWD/.carry/bin
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
out=${OUT:-/tmp/out}
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
if [ "${TESTS:-1}" = 1 ]; then
  echo "== tests"; timeout 200 $b/moe_gpu_grouped_tests 2>&1 | tail -n 4 | tee $out/tests.log
  timeout 200 $b/moe_gpu_grouped_tests --gtest_filter='*Resident*' 2>&1 | grep -E 'OK|FAIL|PASS' | head
  for tool in memcheck synccheck racecheck; do
    echo "== $tool"
    timeout 150 $san --tool $tool --error-exitcode 9 $b/moe_gpu_grouped_tests --gtest_filter='*Resident*' > $out/san_$tool.log 2>&1
    echo "rc=$?"; tail -n 3 $out/san_$tool.log
  done
fi
if [ "${AB:-1}" = 1 ]; then
for r in $(seq ${ROUNDS:-2}); do for v in 0 1; do
  echo "== r$r MOE_GROUPED_RESIDENT=$v"
  MOE_GROUPED_RESIDENT=$v timeout 200 $b/moe bench --models ${MODELS:-qwen3-30b-a3b} \
    --tokens ${TOKENS:-2048,4096,16384} --quant fp8_block --weight-pool 8 --reps ${REPS:-30} --no-peer \
    --out $out/res_${v}_r$r.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
done; done
fi
if [ "${TRACE:-1}" = 1 ]; then
for v in 0 1; do for t in ${TTOKENS:-4096}; do
  echo "== trace MOE_GROUPED_RESIDENT=$v T=$t"
  MOE_GROUPED_RESIDENT=$v CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${v}_$t.csv \
    timeout 150 $b/moe bench --models qwen3-30b-a3b --tokens $t --quant fp8_block --weight-pool 8 --reps 20 --no-peer \
    2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
  python3 scripts/kernel_timeline.py $out/tr_${v}_$t.csv 40 | cut -c1-50,113- | head -20
done; done
fi
cd $out && tar czf res.tgz *.json *.csv *.log 2>/dev/null; rm -f *.json *.csv
