#!/usr/bin/env bash
# Twenty-fourth session, final main (after the review): the grouped GPU tests, and the peer's
# refactored enqueue under memcheck (both fp8 modes, a shared-expert preset among them).
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
san=/usr/local/cuda/bin/compute-sanitizer
summary() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|what\(\)|ERROR SUMMARY|peer FAILED|FAILED:" "$1" | sort | uniq -c | sort -rn | head -8; }
step() { local name=$1 limit=$2; shift 2; local st=$SECONDS
  timeout "$limit" env "$@" > "$out/$name.log" 2>&1 < /dev/null; echo "== $name: exit $? ($((SECONDS - st)) s)"; summary "$out/$name.log"; }
nvidia-smi -L
step tests 200 $b/moe_gpu_grouped_tests
for q in fp8_block fp8_per_tensor; do
  step memcheck_peer_$q 200 $san --tool memcheck --error-exitcode 9 $b/moe bench --models qwen3-30b-a3b,deepseek-v2-lite \
    --tokens 1,512,2048 --quant $q --weight-pool 1 --reps 2 --warmup 1 --out $out/memcheck-peer-$q.json
  grep -E "^(qwen|deep)" $out/memcheck_peer_$q.log
done
cd $out && tar czf s24-final.tgz *.log && rm -f *.log
