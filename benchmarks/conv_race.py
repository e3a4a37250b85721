#!/usr/bin/python3
"""Convolutions side by side: tapegrad's bench_conv beside PyTorch's CPU time on the same shapes and threads.

Runs build/benchmarks/bench_conv, then times torch.nn.functional.conv2d / conv_transpose2d (forward, and the
backward pass producing input and weight gradients) for every case it printed, and prints one JSON object per
line with both timings and
    ratio_vs_torch = torch time / our time   (forward + backward; > 1 means tapegrad is faster).
Each timing is the best of repetitions lasting ~0.4 s after a warm-up, as in bench_conv. PyTorch is optional:
without it the script says so and prints our figures only. With --runs N the whole comparison (bench_conv, then
PyTorch, case by case) is repeated N times and each time is the median over the runs (ratios are those of the medians); --table
also prints the markdown table of docs/benchmarks-conv.md.

Usage: /usr/bin/python3 benchmarks/conv_race.py [--runs N] [--table] [path/to/bench_conv]
"""
import json
import os
import re
import statistics
import subprocess
import sys

TORCH_TIMER = r'''
import json, sys, time, torch
import torch.nn.functional as F
case = json.loads(sys.argv[1])
torch.set_num_threads(case["threads"])
torch.manual_seed(0)
x = torch.rand(case["x"]) * 2 - 1
w = torch.rand(case["w"]) * 2 - 1
op = F.conv_transpose2d if case["transposed"] else F.conv2d
def best(fn, budget=0.4):
    fn()
    best_s, total, reps = 1e30, 0.0, 0
    while reps < 3 or total < budget:
        t = time.perf_counter(); fn(); s = time.perf_counter() - t
        best_s = min(best_s, s); total += s; reps += 1
    return best_s
with torch.no_grad():
    forward = best(lambda: op(x, w, stride=2, padding=1))
xg = x.clone().requires_grad_(True); wg = w.clone().requires_grad_(True)
y = op(xg, wg, stride=2, padding=1)
dy = torch.rand(y.shape) * 2 - 1
backward = best(lambda: torch.autograd.grad(y, (xg, wg), dy, retain_graph=True))
print(json.dumps({"forward_ms": forward * 1e3, "backward_ms": backward * 1e3, "torch": torch.__version__}))
'''

CASE = re.compile(r"(conv2d|conv_transpose2d) (\d+)->(\d+) (\d+)x(\d+)->(\d+)x(\d+) k(\d+) s2 p1")


def shapes(name, batch):
    kind, cin, cout, h, w, _, _, k = CASE.match(name).groups()
    cin, cout, h, w, k = int(cin), int(cout), int(h), int(w), int(k)
    if kind == "conv2d":
        return False, [batch, cin, h, w], [cout, cin, k, k]
    return True, [batch, cin, h, w], [cin, cout, k, k]  # PyTorch's transposed weight: (in, out, k, k)


def race_once(bench, have_torch):
    ours = [json.loads(line) for line in subprocess.run([bench], check=True, capture_output=True, text=True).stdout.splitlines()]
    for row in ours:
        if have_torch:
            transposed, x, w = shapes(row["case"], row["batch"])
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(row["threads"]), OMP_NUM_THREADS=str(row["threads"]))
            case = json.dumps({"x": x, "w": w, "transposed": transposed, "threads": row["threads"]})
            theirs = json.loads(subprocess.run([sys.executable, "-c", TORCH_TIMER, case], check=True, capture_output=True,
                                               text=True, env=env).stdout)
            row["torch_forward_ms"] = theirs["forward_ms"]
            row["torch_backward_ms"] = theirs["backward_ms"]
            row["torch_version"] = theirs["torch"]
            row["ratio_vs_torch_forward"] = theirs["forward_ms"] / row["forward_ms"]
            row["ratio_vs_torch_backward"] = theirs["backward_ms"] / row["backward_ms"]
            row["ratio_vs_torch"] = ((theirs["forward_ms"] + theirs["backward_ms"]) /
                                     (row["forward_ms"] + row["backward_ms"]))
    return ours


NUMERIC = ("forward_ms", "backward_ms", "forward_gflops", "backward_gflops", "torch_forward_ms", "torch_backward_ms")


def main():
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(__doc__)
        return
    unknown = [a for i, a in enumerate(args)
               if a.startswith("-") and a not in ("--runs", "--table") and (i == 0 or args[i - 1] != "--runs")]
    if unknown:
        sys.exit(f"conv_race.py: unknown option {unknown[0]} (see --help)")
    runs = int(args[args.index("--runs") + 1]) if "--runs" in args else 1
    table = "--table" in args
    rest = [a for i, a in enumerate(args) if a not in ("--runs", "--table") and (i == 0 or args[i - 1] != "--runs")]
    bench = rest[0] if rest else "build/benchmarks/bench_conv"
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print(json.dumps({"bench": "conv_race", "note": "python3-torch not installed: our figures only"}))
    all_runs = [race_once(bench, have_torch) for _ in range(runs)]
    rows = []
    for i, row in enumerate(all_runs[0]):
        merged = dict(row, runs=runs)
        for key in NUMERIC:
            if key in row:
                merged[key] = round(statistics.median(r[i][key] for r in all_runs), 3)
        if "torch_forward_ms" in merged:  # ratios of the medians, so that the table's columns agree
            merged["ratio_vs_torch_forward"] = round(merged["torch_forward_ms"] / merged["forward_ms"], 3)
            merged["ratio_vs_torch_backward"] = round(merged["torch_backward_ms"] / merged["backward_ms"], 3)
            merged["ratio_vs_torch"] = round((merged["torch_forward_ms"] + merged["torch_backward_ms"]) /
                                             (merged["forward_ms"] + merged["backward_ms"]), 3)
        rows.append(merged)
        print(json.dumps(merged), flush=True)
    if table and have_torch:
        print("| layer | threads | ours fwd / bwd ms | PyTorch fwd / bwd ms | ratio fwd | ratio bwd |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['case']} | {r['threads']} | {r['forward_ms']:.2f} / {r['backward_ms']:.2f} | "
                  f"{r['torch_forward_ms']:.2f} / {r['torch_backward_ms']:.2f} | {r['ratio_vs_torch_forward']:.2f} | "
                  f"{r['ratio_vs_torch_backward']:.2f} |")


if __name__ == "__main__":
    main()
