#!/usr/bin/env bash
# The doctest suite under AddressSanitizer + UndefinedBehaviorSanitizer (g++), in ./build-asan (debugoptimized,
# without the examples and benchmarks). Any memory error, leak or undefined behaviour stops the run with a report.
# Arguments go to the test binary. Last line: "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan -Db_sanitize=address,undefined -Dbuildtype=debugoptimized -Dexamples=false \
    -Dbenchmarks=false >/dev/null
fi
ninja -C build-asan >/dev/null
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
./build-asan/tests/tapegrad_tests "$@"
