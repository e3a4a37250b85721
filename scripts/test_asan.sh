#!/usr/bin/env bash
# The doctest suite under AddressSanitizer + UndefinedBehaviorSanitizer (g++), in ./build-asan (-O1 -g1, without
# the examples and benchmarks). Line tables (-g1) are all a sanitizer report needs, and the build is most of this
# check's time on CI: ops/elementwise.cpp compiles in 7.5 s at -O1 -g1 against 10.7-12.3 s at debugoptimized's
# -O2 -g. Any memory error, leak or undefined behaviour stops the run with a report.
# Arguments go to the test binary. Last line: "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan -Db_sanitize=address,undefined -Dbuildtype=plain -Doptimization=1 -Dcpp_args=-g1 \
    -Dexamples=false -Dbenchmarks=false >/dev/null
fi
ninja -C build-asan >/dev/null
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
./build-asan/tests/tapegrad_tests "$@"
