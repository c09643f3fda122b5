#!/usr/bin/env bash
# Seventeenth session, run 4: is the lag build at MOE_GROUPED_LAG=0 slower than main's moe
# (same logic, a few more instructions), or was it the run order? lag0 first, then main's moe
# and a byte-identical copy of it, two rounds.
set -uo pipefail
b=$PWD/.carry/bin
out=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name --format=csv,noheader
cp $b/moe /tmp/moe_copy && cmp $b/moe /tmp/moe_copy && echo "moe_copy is byte-identical"
run() {  # tag binary env...
  local tag=$1 bin=$2; shift 2
  echo "== $tag"
  env "$@" timeout 200 $([ -x "$bin" ] && echo $bin || echo $b/$bin) bench --models qwen3-30b-a3b,deepseek-v3 --tokens 4096,16384 --quant fp8_block \
    --weight-pool 8 --reps 30 --no-peer --out $out/order_${tag}.json 2>&1 | grep -E "^(qwen|deepseek)" | cut -c1-100
}
for r in 1 2; do
  run r${r}_lag0 moe_lag MOE_GROUPED_LAG=0
  run r${r}_main moe
  run r${r}_copy /tmp/moe_copy
done
cd $out && tar czf order.tgz order_*.json && rm -f order_*.json
