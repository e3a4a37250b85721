#!/usr/bin/env bash
# What a run remembers (examples/common/run.h). For a model trained with --data DIR:
#   - `eval` without --data reads DIR, not the default digits (Note [data of a run]),
#   - `eval --data X` reads X (the flag wins),
#   - `train --resume` without --data continues on DIR;
# every program prints the folder it loaded on a "data: <folder> (...)" line of stdout, which is checked. And
# `train --resume` keeps the checkpoint's settings (Note [resume]): flags that disagree with it are named on one
# stderr line, flags that agree are not.
#
#   bash tests/run_settings.sh [BUILD_DIR]      (default: build)
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

# expect_ignored PATTERN PROGRAM ARGS...: runs the program; its stderr line "... ignored: ..." must match the
# extended regular expression PATTERN, or be absent when PATTERN is "none".
expect_ignored() {
  local pattern=$1 program=$2
  shift 2
  local name line
  name=$(basename "$program")
  timeout 120 "$program" "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr"
  line=$(grep -h "ignored:" "$tmp/stderr" | tr '\n' ' ')
  if { [ "$pattern" = none ] && [ -z "$line" ]; } || { [ "$pattern" != none ] && grep -Eq -- "$pattern" <<<"$line"; }; then
    passed=$((passed + 1))
    printf 'ok    %s %s  ->  %s\n' "$name" "$*" "${line:-no flag ignored}"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s %s  ->  "%s", expected %s\n' "$name" "$*" "$line" "$pattern"
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
  # shellcheck disable=SC2086
  expect_ignored none "$binary" train --resume --epochs 3 --threads 1 ${tiny[$program]} --seed 1 --out "$run"
  expect_ignored "--lr 0.25 \(checkpoint: [0-9.e-]+\).*--hidden 32 \(checkpoint: 16\)" "$binary" train --resume \
    --epochs 4 --threads 1 --lr 0.25 --hidden 32 --out "$run"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
