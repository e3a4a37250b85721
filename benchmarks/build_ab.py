#!/usr/bin/python3
"""Two builds of one example program side by side: which is faster, on a machine too noisy for a single run.

  /usr/bin/python3 benchmarks/build_ab.py OLD_PROGRAM NEW_PROGRAM [--pairs 10] [-- train flags]

Runs `OLD_PROGRAM train ... --out DIR`, then NEW_PROGRAM with the same flags, --pairs times, alternating, so that
the machine's slow minutes fall on both. Each run's time is its fastest epoch (the `seconds` column of gmvae and
m2; vae's `train_seconds`, its evaluation left out as in vae_race.py). Prints one JSON line: both lists, their
medians and minima, and the median of the paired ratios new / old (below 1: the new build is faster). Build the
old one from a `git worktree` of its commit. The default flags are the GMVAE race's full recipe for 2 epochs on
the bundled digits at 1 thread. The runs' logs are compared too: "same_scores" says whether every column but the
times is identical (same bits) in the last pair.
"""
import argparse
import csv
import json
import os
import statistics
import sys
import tempfile

from race_common import run_child

GMVAE_FULL = ["--data", "digits", "--epochs", "2", "--threads", "1", "--binarize", "--z-given", "x", "--q-y",
              "closed-form", "--mi-weight", "0", "--covariance", "full"]
TIME_COLUMNS = ("seconds", "train_seconds", "train_cpu_seconds", "eval_seconds")


def run(program, flags):
    """The fastest epoch's seconds, and the log's rows without their time columns."""
    with tempfile.TemporaryDirectory() as out:
        run_child([program, "train"] + flags + ["--out", out])
        with open(os.path.join(out, "log.csv")) as f:
            rows = list(csv.DictReader(f))
    column = "train_seconds" if "train_seconds" in rows[0] else "seconds"
    scores = [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in rows]
    return min(float(row[column]) for row in rows), scores


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--pairs", type=int, default=10)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)  # after --: the train flags
    args = ap.parse_args(argv[:split])
    flags = argv[split + 1:] or GMVAE_FULL
    old, new = [], []
    for _ in range(args.pairs):
        seconds, old_scores = run(args.old, flags)
        old.append(seconds)
        seconds, new_scores = run(args.new, flags)
        new.append(seconds)
    print(json.dumps({"bench": "build_ab", "flags": " ".join(flags), "old_s": old, "new_s": new,
                      "old_median": statistics.median(old), "new_median": statistics.median(new),
                      "old_min": min(old), "new_min": min(new),
                      "paired_ratio_median": round(statistics.median(n / o for n, o in zip(new, old)), 3),
                      "same_scores": old_scores == new_scores}))


if __name__ == "__main__":
    main()
