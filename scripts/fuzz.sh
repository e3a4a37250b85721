#!/usr/bin/env bash
# Fuzzes the file readers with libFuzzer under AddressSanitizer + UndefinedBehaviorSanitizer:
#   fuzz_idx          IDX, raw and gzip (parse_idx)
#   fuzz_safetensors  checkpoints (parse_safetensors)
# Both run at once (one core each) for SECONDS (default 60), starting from the seeds in tests/fuzz/corpus/<target>/.
# Any crash, sanitizer report, leak, hang (> 10 s on one input) or memory blow-up (> 2 GiB) fails the run; the input
# is kept in build-fuzz/artifacts/<target>/. To turn it into a regression test, copy it to
# tests/fuzz/regressions/<target>/ (the doctest suite replays that folder) and fix the reader.
#
#   bash scripts/fuzz.sh [SECONDS]
#
# Needs clang and libclang-rt-14-dev (scripts/deps.sh --fuzz installs them). Last line: "N passed, N failed",
# one test case per target.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
bash scripts/deps.sh --fuzz || exit 1
if [ ! -f build-fuzz/build.ninja ]; then
  CXX=clang++ meson setup build-fuzz -Dfuzz=true -Dtests=false -Dexamples=false -Dbenchmarks=false \
    -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || exit 1
fi
ninja -C build-fuzz >/dev/null || { echo "fuzz: build failed"; echo "0 passed, 1 failed"; exit 1; }

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
targets=(idx safetensors)
pids=()
for target in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$target" "build-fuzz/artifacts/$target"
  # The first folder collects new inputs; the seeds in the tree are only read.
  ./build-fuzz/tests/fuzz/fuzz_$target "build-fuzz/corpus/$target" "tests/fuzz/corpus/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="build-fuzz/artifacts/$target/" >"build-fuzz/$target.log" 2>&1 &
  pids+=($!)
done

passed=0 failed=0
for i in "${!targets[@]}"; do
  target=${targets[$i]}
  wait "${pids[$i]}"
  status=$?
  log=build-fuzz/$target.log
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  if [ "$status" -eq 0 ] && ! grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log"; then
    passed=$((passed + 1))
    echo "ok    fuzz_$target: ${runs:-?} inputs in ${seconds} s, ${cov:-cov ?}, no crash, leak or hang"
  else
    failed=$((failed + 1))
    echo "FAIL  fuzz_$target (exit $status); the input is in build-fuzz/artifacts/$target/:"
    grep -E -m 5 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | sed 's/^/      /'
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
