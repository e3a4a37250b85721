#!/usr/bin/python3
"""tapegrad's GMVAE beside its PyTorch reference: same data, networks, loss, optimizer and epochs, run alternately.

  /usr/bin/python3 benchmarks/gmvae_race.py [--data digits|fashion|DIR] [--runs 3] [--threads 1,2] [--epochs 2]
      [--recipe network|closed-form|main|full]

For each thread count it runs ours (./build/examples/gmvae train) and benchmarks/gmvae_torch.py in turn, --runs
times each, both with a recipe of docs/gmvae.md (network: --binarize --z-given x --mi-weight 0; closed-form:
--binarize --z-given x --q-y closed-form; main: closed-form with --mi-weight 0; full: main with --covariance full,
the README's recipe; the epochs of both cost the same with or without --pretrain's start, so the race leaves the
pretraining out), and prints one
JSON line:
  {"bench": "gmvae_epoch", "threads", "ours_s", "torch_s", "ratio", "torch_setting", "ours_all", "torch_all", ...}
Seconds per epoch include the test-set evaluation in both programs (that is what `gmvae train` logs); ours_s /
torch_s are medians over runs of the median epoch; ratio = ours_s / torch_s. With 2 threads PyTorch runs in each
setting of --torch-2t ("intra x blas" threads) and is compared in its fastest one, as in benchmarks/vae_race.py.
"""
import argparse
import csv
import json
import os
import statistics
import sys
import tempfile

from race_common import ROOT, report_per_thread_count, run_child, torch_available

RECIPES = {"network": ["--binarize", "--z-given", "x", "--mi-weight", "0"],
           "closed-form": ["--binarize", "--z-given", "x", "--q-y", "closed-form"],
           "main": ["--binarize", "--z-given", "x", "--q-y", "closed-form", "--mi-weight", "0"]}
RECIPES["full"] = RECIPES["main"] + ["--covariance", "full"]


def run_ours(args, threads):
    with tempfile.TemporaryDirectory() as out:
        run_child([os.path.join(ROOT, args.build, "examples", "gmvae"), "train", "--data", args.data, "--epochs",
                   str(args.epochs), "--threads", str(threads), "--out", out] + RECIPES[args.recipe])
        with open(os.path.join(out, "log.csv")) as f:
            return statistics.median(float(row["seconds"]) for row in csv.DictReader(f))


def run_torch(args, intra, blas):
    data = {"digits": os.path.join(ROOT, "data", "digits")}.get(args.data, args.data)
    stdout, _ = run_child([sys.executable, os.path.join(ROOT, "benchmarks", "gmvae_torch.py"), "--data", data,
                           "--epochs", str(args.epochs), "--threads", str(intra)] + RECIPES[args.recipe],
                          dict(os.environ, OPENBLAS_NUM_THREADS=str(blas)))
    return statistics.median(json.loads(line)["seconds_with_eval"] for line in stdout.strip().splitlines())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--runs", type=int, default=3, help="runs of each program per thread count (median)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--torch-2t", default="1x2,2x1", help="torch settings tried with 2 threads: intra x blas")
    ap.add_argument("--build", default="build")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="network")
    args = ap.parse_args()
    if not torch_available("gmvae_epoch"):
        return
    report_per_thread_count("gmvae_epoch", args, lambda threads: run_ours(args, threads),
                            lambda intra, blas: run_torch(args, intra, blas), {"data": args.data, "recipe": " ".join(RECIPES[args.recipe])})


if __name__ == "__main__":
    main()
