#!/usr/bin/env bash
# Twenty-seventh session: a decode FC1 prefetching FC2's weights into L2 (GroupedGemmParams::
# l2_prefetch; MOE_GROUPED_L2_PREFETCH 0 off, 1 after FC1's first stages, 2 after its last fill).
# PART=1: the new GPU test, the grouped GPU tests, memcheck of the new test, then the layer at
# 1 / 2 / 8 tokens (Qwen3-30B-A3B, DeepSeek-V3; both fp8 modes) for the three modes and the base
# binary (moe_base: c44f04c), alternated, two rounds. PART=2: timelines at Qwen3 T=1.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
t=$b/moe_gpu_grouped_tests
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|Hazard" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
bench() {  # bin mode quant models tokens
  MOE_GROUPED_L2_PREFETCH=$2 timeout 120 $b/$1 bench --models $4 --tokens $5 --quant $3 \
    --weight-pool 1 --reps 20 --no-peer 2>&1 | grep -E "^(qwen|deep)|FAILED|rror" | cut -c1-60
}
nvidia-smi -L
if [ "${PART:-1}" = 1 ]; then
  step new_test 200 $t --gtest_filter='*L2Prefetch*'
  step tests 360 $t
  step memcheck_new 300 $san --tool memcheck --error-exitcode 9 $t --gtest_filter='*L2Prefetch*'
  cd $out && tar czf s27-prefetch-checks.tgz *.log && rm -f *.log && cd - > /dev/null
  for r in 1 2; do for q in fp8_block fp8_per_tensor; do
    for v in "moe_base 1" "moe 0" "moe 1" "moe 2"; do set -- $v
      echo "== round $r $q $1 prefetch=$2"; bench $1 $2 $q qwen3-30b-a3b 1,2,8
    done
  done; done
  for v in "moe_base 1" "moe 0" "moe 1" "moe 2"; do set -- $v
    echo "== deepseek-v3 fp8_block $1 prefetch=$2"; bench $1 $2 fp8_block deepseek-v3 1,8
  done
else
  for q in fp8_block fp8_per_tensor; do for m in 0 1 2; do
    echo "== trace qwen3 T=1 $q prefetch=$m"
    MOE_GROUPED_L2_PREFETCH=$m CUDA_INJECTION64_PATH=$b/libkernel_trace.so KERNEL_TRACE_OUT=$out/tr_${q}_$m.csv \
      timeout 120 $b/moe bench --models qwen3-30b-a3b --tokens 1 --quant $q --weight-pool 1 --reps 20 --no-peer 2>&1 | grep -E "^qwen" | cut -c1-60
    python3 scripts/kernel_timeline.py $out/tr_${q}_$m.csv 20 | cut -c1-100
  done; done
  cd $out && tar czf s27-prefetch-traces.tgz tr_*.csv && rm -f tr_*.csv
fi
