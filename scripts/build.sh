#!/usr/bin/env bash
# Installs missing packages, then configures (once) and builds tapegrad into ./build (optimised, -march=native).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
