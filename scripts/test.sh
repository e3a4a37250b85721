#!/usr/bin/env bash
# Builds and runs every test. The last line is the totals: "N passed, N failed" (test cases).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/tests/tapegrad_tests "$@"
