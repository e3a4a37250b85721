#!/usr/bin/env bash
# Command-line robustness: every bad invocation of an example program must end with exit code 2 and exactly one
# line on stderr ("<program>: <what is wrong>"), never a crash, a stack trace or an "internal error".
#
#   bash tests/cli_errors.sh [BUILD_DIR]      (default: build)
#
# Prints one line per case and, last, "N passed, N failed" (each case counts as one test case).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

# expect_usage_error PROGRAM ARGS...: runs it (no stdin, 60 s at most) and checks exit code and stderr.
expect_usage_error() {
  local program=$1
  shift
  local name
  name=$(basename "$program")
  timeout 60 "$program" "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr"
  local code=$? lines
  lines=$(wc -l <"$tmp/stderr")
  if [ "$code" -eq 2 ] && [ "$lines" -eq 1 ] && grep -q "^$name: " "$tmp/stderr" && ! grep -q "internal error" "$tmp/stderr"; then
    passed=$((passed + 1))
    printf 'ok    %s %s  ->  %s\n' "$name" "$*" "$(cat "$tmp/stderr")"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s %s  ->  exit %s, %s stderr lines:\n' "$name" "$*" "$code" "$lines"
    sed 's/^/      /' "$tmp/stderr" | head -n 20
  fi
}

# Inputs that exist but are wrong.
printf 'not a checkpoint' >"$tmp/garbage.safetensors"
printf 'x' >"$tmp/a-file"
mkdir -p "$tmp/no-data"
mkdir -p "$tmp/bad-data"  # all four files, the training images cut off inside their header
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  printf '\x00\x00\x08\x03\x00\x00' >"$tmp/bad-data/$f"
done
mkdir -p "$tmp/resume-garbage" && cp "$tmp/garbage.safetensors" "$tmp/resume-garbage/checkpoint.safetensors"

# Every program shares the flags of examples/common/run.h, so these apply to all three.
common_cases=(
  ""                                      # no subcommand
  "fly"                                   # unknown subcommand
  "train --bogus 1"                       # unknown flag
  "train stray"                           # a positional argument
  "train --epochs"                        # flag without its value
  "train --epochs 0"
  "train --epochs -3"
  "train --epochs 2.5"
  "train --epochs 99999999999999999999999"
  "train --batch 0"
  "train --batch -128"
  "train --lr 0"
  "train --lr nan"
  "train --lr abc"
  "train --lr=-1e-3"
  "train --lr-schedule linear"
  "train --threads -1"
  "train --threads 5000"
  "train --seed -1"
  "train --latent 0"
  "train --hidden -1"
  "train --data /nonexistent/folder"
  "train --data $tmp/no-data"
  "train --data $tmp/bad-data"
  "train --out /proc/tapegrad-cannot-create"
  "train --out $tmp/a-file"
  "train --out $tmp/a-file/below"
  "eval --checkpoint $tmp/garbage.safetensors"
  "eval --checkpoint $tmp/missing.safetensors"
  "sample --checkpoint $tmp"
  "train --resume --out $tmp/resume-garbage"
)
vae_cases=(
  "train --beta -1"
  "train --kl-warmup -2"
  "train --arch transformer"
  "sample --num 0"
  "eval --iwae -5"
  "eval --out $tmp/empty-run"
  "reconstruct --checkpoint /dev/null"
)
gmvae_cases=(
  "train --components 1"
  "train --layers 0"
  "train --prior-init -1"
  "train --pretrain 2"                    # needs --z-given x
  "train --q-y closed-form"               # likewise
  "train --q-y bayes"
  "train --covariance full"               # needs --z-given x
  "train --covariance banded"
  "train --kmeans-restarts 0"
  "train --component-start umap"
  "train --neighbours 0"
  "train --eigenvectors -1"
  "eval --out $tmp/empty-run"
)
m2_cases=(
  "train --labels 0"
  "train --labelled-batch 0"
  "train --validation 5"
  "train --alpha -1"
  "eval --out $tmp/empty-run"
)
cd "$tmp"  # so that each program's default --out (runs/<program>) lands in the scratch folder
for program in vae gmvae m2; do
  binary=$(realpath "$OLDPWD/$build/examples/$program")
  declare -n extra="${program}_cases"
  for c in "${common_cases[@]}" "${extra[@]}"; do
    # shellcheck disable=SC2086  # each case is a list of words
    expect_usage_error "$binary" $c
  done
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
