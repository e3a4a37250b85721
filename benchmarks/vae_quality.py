#!/usr/bin/python3
"""Test ELBO of tapegrad's VAE beside PyTorch's after the same training (issue: within 1 nat, mean of 3 seeds).

  /usr/bin/python3 benchmarks/vae_quality.py [--data digits,fashion] [--epochs 10] [--seeds 1,2,3] [--arch mlp]

One JSON line per (data, seed) with both final test ELBOs (one sampled z per image, averaged over the test set),
then one summary line per data set: {"bench": "vae_quality", "ours_mean", "torch_mean", "diff"}.
"""
import argparse
import json
import statistics
import sys

import vae_race


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="digits,fashion")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--build", default="build")
    args = ap.parse_args()
    for data in args.data.split(","):
        ours, torch = [], []
        for seed in (int(s) for s in args.seeds.split(",")):
            run = argparse.Namespace(build=args.build, data=data, epochs=args.epochs, seed=seed)
            o = vae_race.run_ours(run, args.arch, args.batch, args.threads)
            t = vae_race.run_torch(run, args.arch, args.batch, args.threads, 1)
            ours.append(o[2])
            torch.append(t[2])
            print(json.dumps({"bench": "vae_quality_run", "data": data, "arch": args.arch, "seed": seed,
                              "epochs": args.epochs, "ours_elbo": round(o[2], 3), "torch_elbo": round(t[2], 3)}),
                  flush=True)
        om, tm = statistics.mean(ours), statistics.mean(torch)
        print(json.dumps({"bench": "vae_quality", "data": data, "arch": args.arch, "epochs": args.epochs,
                          "batch": args.batch, "seeds": args.seeds, "ours_mean": round(om, 3),
                          "torch_mean": round(tm, 3), "diff": round(om - tm, 3), "within_1_nat": abs(om - tm) <= 1}),
              flush=True)


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    main()
