#!/usr/bin/env bash
# Kill safety: `vae train` killed with SIGKILL at random moments (some of them while a checkpoint is being written)
# and restarted with --resume must
#   - always leave a checkpoint that loads (`vae eval` succeeds on it), and
#   - end with a checkpoint byte-identical to an uninterrupted run's (tensors and metadata, test_elbo included),
#     and the same log.csv rows apart from the timing column.
# Resumed runs use a random --threads (1 or 2): the result must not depend on it either.
#
#   bash tests/kill_resume.sh [BUILD_DIR] [TRIALS]      (defaults: build, 4)
#
# Prints one line per trial and, last, "N passed, N failed" (each trial counts as one test case).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
trials=${2:-4}
vae=$(realpath "$build/examples/vae")
tmp=$(mktemp -d)
trap 'kill -9 "${pid:-}" 2>/dev/null; rm -rf "$tmp"' EXIT
# Small and quick: 4 epochs of the bundled digits, so that kills land in every phase (training, evaluation,
# checkpoint writing, pictures) within a few seconds; the cosine schedule makes every epoch's learning rate differ,
# so a resumed epoch run at the wrong rate would show (Note [lr schedule]).
args=(train --epochs 4 --hidden 200 --latent 8 --batch 256 --seed 3 --lr-schedule cosine)
passed=0 failed=0
RANDOM=${KILL_RESUME_SEED:-$$}

start=$(date +%s%N)
if ! "$vae" "${args[@]}" --threads 2 --out "$tmp/reference" >/dev/null 2>"$tmp/reference.err"; then
  cat "$tmp/reference.err"
  echo "0 passed, 1 failed"
  exit 1
fi
ms=$((($(date +%s%N) - start) / 1000000))  # the uninterrupted run's length, in ms
echo "uninterrupted run: ${ms} ms"

# The rows of log.csv without the last column (seconds, which differs from run to run).
rows() { cut -d, -f1-6 "$1/log.csv"; }

# Kills while a checkpoint is being written over an existing one (its temporary file has appeared), or after the
# length of a whole run at most.
kill_during_checkpoint_write() {
  local deadline=$((SECONDS + ms / 1000 + 2))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    if [ -f "$1/checkpoint.safetensors" ] && compgen -G "$1/checkpoint.safetensors.tmp.*" >/dev/null; then break; fi
  done
  kill -9 "$pid" 2>/dev/null
}

for trial in $(seq 1 "$trials"); do
  dir="$tmp/trial$trial"
  mkdir -p "$dir"
  problems=() kills=0 torn=0
  for attempt in 1 2 3; do
    "$vae" "${args[@]}" --resume --threads $((RANDOM % 2 + 1)) --out "$dir" >/dev/null 2>>"$dir/stderr" &
    pid=$!
    if ((attempt == 2)); then
      kill_during_checkpoint_write "$dir"
    else
      delay=$((RANDOM * 32768 + RANDOM))
      delay=$((delay % (ms * (4 - attempt) / 3)))  # the later attempts start later: shorter delays
      sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
      kill -9 "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    [ $? -eq 137 ] && kills=$((kills + 1))
    if compgen -G "$dir/checkpoint.safetensors.tmp.*" >/dev/null; then torn=$((torn + 1)); fi
    # Whatever moment the kill hit, the checkpoint on disk (if any yet) must load.
    if [ -f "$dir/checkpoint.safetensors" ] &&
      ! "$vae" eval --iwae 0 --out "$dir" >/dev/null 2>"$dir/eval.err"; then
      problems+=("checkpoint does not load after kill $attempt: $(tail -n 1 "$dir/eval.err")")
    fi
  done
  # Then let it finish.
  if ! "$vae" "${args[@]}" --resume --threads $((RANDOM % 2 + 1)) --out "$dir" >/dev/null 2>>"$dir/stderr"; then
    problems+=("the final resumed run failed: $(tail -n 1 "$dir/stderr")")
  elif ! cmp -s "$tmp/reference/checkpoint.safetensors" "$dir/checkpoint.safetensors"; then
    problems+=("final checkpoint differs from the uninterrupted run's")
  elif [ "$(rows "$tmp/reference")" != "$(rows "$dir")" ]; then
    problems+=("log.csv rows differ from the uninterrupted run's: $(diff <(rows "$tmp/reference") <(rows "$dir") | tr '\n' ' ')")
  fi
  if compgen -G "$dir/checkpoint.safetensors.tmp.*" >/dev/null; then problems+=("a temporary checkpoint file was left behind"); fi
  resumed=$(grep -c "^resumed" "$dir/stderr")
  if ((${#problems[@]} == 0)); then
    passed=$((passed + 1))
    echo "ok    trial $trial: $kills kills ($torn during a checkpoint write), $resumed resumes from a checkpoint, final checkpoint identical"
  else
    failed=$((failed + 1))
    echo "FAIL  trial $trial: $kills kills, $resumed resumes: ${problems[*]}"
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
