#!/usr/bin/python3
"""tapegrad's VAE beside PyTorch's: same data, architecture, batch, optimizer and epochs, run alternately.

  /usr/bin/python3 benchmarks/vae_race.py [--data fashion] [--epochs 1] [--runs 3] [--configs mlp-128-1,...]

For each configuration (arch-batch-threads) it runs ours (./build/examples/vae train) and torch
(benchmarks/vae_torch.py) in turn, --runs times each, and prints one JSON line:
  {"bench": "vae_epoch", "arch", "batch", "threads", "ours_s", "torch_s", "ratio", "ours_rss_mib",
   "torch_rss_mib", "ours_elbo", "torch_elbo", "torch_setting", ...}
ours_s / torch_s are medians over runs of the mean training seconds per epoch (evaluation excluded), ratio =
ours_s / torch_s. ours_cpu_s / torch_cpu_s are the same in CPU seconds (all threads): on a shared machine,
the steadier comparison for 1 thread (with 2 threads, CPU time counts both cores' work, not the wait). With 2 threads torch is run in each setting of --torch-2t ("intra x blas" threads) and
compared in its fastest one. Peak RSS is each child's own ru_maxrss (os.wait4). The machine may be shared:
alternating the two programs spreads the noise over both; look at the spread ("ours_all", "torch_all").
"""
import argparse
import csv
import json
import os
import statistics
import sys
import tempfile

from race_common import ROOT, race, run_child, torch_available

DEFAULT_CONFIGS = "mlp-128-1,mlp-128-2,mlp-16-1,conv-128-1,conv-128-2"


def run_ours(args, arch, batch, threads):
    with tempfile.TemporaryDirectory() as out:
        cmd = [os.path.join(ROOT, args.build, "examples", "vae"), "train", "--data", args.data, "--arch", arch,
               "--epochs", str(args.epochs), "--batch", str(batch), "--threads", str(threads),
               "--seed", str(args.seed), "--out", out]
        _, rss = run_child(cmd)
        with open(os.path.join(out, "log.csv")) as f:
            rows = list(csv.DictReader(f))
    seconds = statistics.mean(float(r["train_seconds"]) for r in rows)
    cpu = statistics.mean(float(r["train_cpu_seconds"]) for r in rows)
    return seconds, rss, float(rows[-1]["test_elbo"]), cpu


def run_torch(args, arch, batch, intra, blas):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "vae_torch.py"), "--data", args.data, "--arch", arch,
           "--epochs", str(args.epochs), "--batch", str(batch), "--threads", str(intra),
           "--blas-threads", str(blas), "--seed", str(args.seed)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas))
    stdout, rss = run_child(cmd, env)
    result = json.loads(stdout.strip().splitlines()[-1])
    return statistics.mean(result["epoch_s"]), rss, result["test_elbo"][-1], statistics.mean(result["epoch_cpu_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="fashion")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="runs of each program per configuration (median)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated arch-batch-threads")
    ap.add_argument("--torch-2t", default="1x2,2x1", help="torch settings tried with 2 threads: intra x blas")
    ap.add_argument("--build", default="build")
    args = ap.parse_args()
    if not torch_available("vae_epoch"):
        return
    for config in args.configs.split(","):
        arch, batch, threads = config.split("-")
        batch, threads = int(batch), int(threads)
        ours, torch_runs = race(args.runs, threads, args.torch_2t, lambda: run_ours(args, arch, batch, threads),
                                lambda intra, blas: run_torch(args, arch, batch, intra, blas))
        ours_s = statistics.median(r[0] for r in ours)
        medians = {s: statistics.median(r[0] for r in runs) for s, runs in torch_runs.items()}
        best = min(medians, key=medians.get)
        ours_cpu = statistics.median(r[3] for r in ours)
        torch_cpu = statistics.median(r[3] for r in torch_runs[best])
        print(json.dumps({
            "bench": "vae_epoch", "data": args.data, "arch": arch, "batch": batch, "threads": threads,
            "epochs": args.epochs, "runs": args.runs,
            "ours_s": round(ours_s, 3), "torch_s": round(medians[best], 3), "ratio": round(ours_s / medians[best], 3),
            "torch_setting": f"intra {best[0]} x blas {best[1]}",
            "torch_settings_s": {f"{s[0]}x{s[1]}": round(m, 3) for s, m in medians.items()},
            "ours_rss_mib": round(max(r[1] for r in ours), 1),
            "torch_rss_mib": round(max(r[1] for r in torch_runs[best]), 1),
            "ours_elbo": round(ours[-1][2], 3), "torch_elbo": round(torch_runs[best][-1][2], 3),
            "ours_all": [round(r[0], 3) for r in ours], "torch_all": [round(r[0], 3) for r in torch_runs[best]],
            "ours_cpu_s": round(ours_cpu, 3), "torch_cpu_s": round(torch_cpu, 3),
            "cpu_ratio": round(ours_cpu / torch_cpu, 3),
        }), flush=True)


if __name__ == "__main__":
    main()
