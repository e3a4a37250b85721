#!/usr/bin/env bash
# The data of a run (Note [data of a run] in examples/common/run.h): for a model trained with --data DIR,
#   - `eval` without --data reads DIR (not the default digits),
#   - `eval --data X` reads X (the flag wins),
#   - `train --resume` without --data continues on DIR.
# Every program prints the folder it loaded on a "data: <folder> (...)" line of stdout; that line is checked.
#
#   bash tests/run_data.sh [BUILD_DIR]      (default: build)
#
# Prints one line per case and, last, "N passed, N failed" (each case counts as one test case).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

# A copy of the bundled digits in a folder of its own, so that "the run's data" and "the default" differ.
mkdir -p "$tmp/other-digits"
cp data/digits/*-ubyte* "$tmp/other-digits/"
default=$(realpath data/digits)

# expect_data FOLDER PROGRAM ARGS...: runs the program and checks the folder named on its "data:" line.
expect_data() {
  local want=$1 program=$2
  shift 2
  local name got
  name=$(basename "$program")
  if ! timeout 120 "$program" "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr"; then
    failed=$((failed + 1))
    printf 'FAIL  %s %s  ->  exit code %s:\n' "$name" "$*" "$?"
    sed 's/^/      /' "$tmp/stderr" | tail -n 5
    return
  fi
  got=$(sed -n 's/^data: \(.*\) ([0-9]* train.*$/\1/p' "$tmp/stdout" | head -n 1)
  if [ "$(realpath -m "$got")" = "$(realpath -m "$want")" ]; then
    passed=$((passed + 1))
    printf 'ok    %s %s  ->  data: %s\n' "$name" "$*" "$got"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s %s  ->  data: %s, expected %s\n' "$name" "$*" "$got" "$want"
  fi
}

# One tiny epoch each: the check is about which files are read, not about the model.
declare -A tiny=(
  [vae]="--hidden 16 --latent 2"
  [gmvae]="--hidden 16 --layers 1 --latent 2 --components 3"
  [m2]="--hidden 16 --latent 2 --labels 10 --validation 100 --unlabelled 400"
)
for program in vae gmvae m2; do
  binary=$(realpath "$build/examples/$program")
  run="$tmp/$program-run"
  # shellcheck disable=SC2086  # each entry is a list of words
  expect_data "$tmp/other-digits" "$binary" train --epochs 1 --threads 1 ${tiny[$program]} --data "$tmp/other-digits" --out "$run"
  expect_data "$tmp/other-digits" "$binary" eval --threads 1 --out "$run"
  expect_data "$default" "$binary" eval --threads 1 --data digits --out "$run"
  # shellcheck disable=SC2086
  expect_data "$tmp/other-digits" "$binary" train --resume --epochs 2 --threads 1 ${tiny[$program]} --out "$run"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
