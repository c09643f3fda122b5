#!/usr/bin/env bash
# Several builds of moe_comm_bench side by side on a 2-GPU device machine (issue 6): each
# binary named in VARIANTS (files in .carry/bin) runs one_sided at every --partials setting of
# PARTIALS, back to back in one call, so that their numbers compare within one run. Builds
# configured with MOE_COMM_TRACE=ON (names containing "trace") add --trace. TESTS names test
# binaries (in .carry/bin) to run first on both ranks. ROUNDS alternates the builds that many
# times (the device returns a limited number of files: keep ROUNDS x VARIANTS x PARTIALS small).
# Usage: VARIANTS="moe_comm_bench moe_comm_bench_v3" [PARTIALS="f32 act"] [ROUNDS=2] [TESTS=...] \
#        [BENCH_ARGS=...] scripts/device/one_sided_variants.sh      (logs and JSON under $OUT)
set -uo pipefail
source "$(dirname "$0")/two_gpu_env.sh"
for t in ${TESTS:-}; do
  echo "== $t"
  timeout 300 $mpi $b/$t > "$out/$t.log" 2>&1
  echo "exit $?"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|Expected|Which|what\(\)" "$out/$t.log" | sort | uniq -c | sort -rn | head -20
done
for r in $(seq 1 "${ROUNDS:-1}"); do
  for v in ${VARIANTS:?name the moe_comm_bench builds}; do
    for partials in ${PARTIALS:-act}; do
      extra=""
      case $v in *trace*) extra="--trace" ;; esac
      name=$v-$partials-r$r
      echo "== round $r: $v --partials $partials $extra"
      timeout 150 $mpi $b/$v --strategies one_sided --partials $partials --no-baselines $extra \
        ${BENCH_ARGS:-} --json "$out/$name.json" > "$out/$name.log" 2>&1
      echo "exit $?"
      grep -E "^(one_sided|trace)" "$out/$name.log" | grep -v eager | sort -u
    done
  done
done
