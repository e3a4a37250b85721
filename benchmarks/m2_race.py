#!/usr/bin/python3
"""tapegrad's M2 beside its PyTorch reference: same data protocol, networks, loss, optimizer and epochs, run alternately.

  /usr/bin/python3 benchmarks/m2_race.py [--runs 3] [--threads 1,2] [--epochs 2] [-- extra flags for both programs]

For each thread count it runs ours (./build/examples/m2 train) and benchmarks/m2_torch.py in turn, --runs times
each, and prints one JSON line:
  {"bench": "m2_epoch", "threads", "ours_s", "torch_s", "ratio", "torch_setting", "ours_all", "torch_all", ...}
ours_s / torch_s are medians over runs of the median seconds per epoch, each counting the epoch's training and its
validation and test accuracy (what `m2 train` logs; until 2026-12-04 PyTorch's side left its evaluation out, about
1% of an epoch); ratio = ours_s / torch_s. With 2 threads PyTorch is run in each setting of --torch-2t ("intra x blas" threads) and
compared in its fastest one, as benchmarks/vae_race.py does.
"""
import argparse
import csv
import json
import os
import statistics
import sys
import tempfile

from race_common import ROOT, report_per_thread_count, run_child, torch_available

RECIPE = ["--labels", "100", "--latent", "2", "--alpha", "1000000", "--lr", "1e-3"]


def run_ours(args, threads):
    with tempfile.TemporaryDirectory() as out:
        run_child([os.path.join(ROOT, args.build, "examples", "m2"), "train", "--epochs", str(args.epochs),
                   "--threads", str(threads), "--out", out] + RECIPE + args.extra)
        with open(os.path.join(out, "log.csv")) as f:
            return statistics.median(float(row["seconds"]) for row in csv.DictReader(f))


def run_torch(args, intra, blas):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "m2_torch.py"), "--epochs", str(args.epochs),
           "--threads", str(intra)] + RECIPE + args.extra
    stdout, _ = run_child(cmd, dict(os.environ, OPENBLAS_NUM_THREADS=str(blas)))
    return json.loads(stdout.strip().splitlines()[-1])["median_epoch_seconds_with_eval"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each program per thread count (median)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--torch-2t", default="1x2,2x1", help="torch settings tried with 2 threads: intra x blas")
    ap.add_argument("--build", default="build")
    ap.add_argument("extra", nargs="*", help="flags passed to both programs after the recipe (e.g. -- --latent 50)")
    args = ap.parse_args()
    if not torch_available("m2_epoch"):
        return
    report_per_thread_count("m2_epoch", args, lambda threads: run_ours(args, threads),
                            lambda intra, blas: run_torch(args, intra, blas), {"recipe": " ".join(RECIPE + args.extra)})


if __name__ == "__main__":
    main()
