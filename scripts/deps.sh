#!/usr/bin/env bash
# Installs the Debian 12 packages tapegrad builds and tests with, if any is missing (needs root for apt-get).
#   --fuzz   also clang and its runtime libraries (libFuzzer, ASan, UBSan) for scripts/fuzz.sh
set -euo pipefail
packages=(g++ meson ninja-build pkg-config libxsimd-dev libtbb-dev doctest-dev libstb-dev zlib1g-dev python3-numpy)
[ "${1:-}" = "--fuzz" ] && packages+=(clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "tapegrad: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
