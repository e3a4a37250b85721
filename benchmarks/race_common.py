"""What the races (vae_race.py, m2_race.py, gmvae_race.py) share: running a child for its output and peak RSS,
alternating our program with PyTorch's, and the report for models timed by seconds per epoch alone."""
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(cmd, env=None):
    """Runs cmd, returns (stdout, peak RSS of that child in MiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        except FileNotFoundError:
            sys.exit(f"{os.path.basename(sys.argv[0])}: {cmd[0]} not found (build first: meson setup build && ninja -C build)")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{os.path.basename(sys.argv[0])}: {' '.join(cmd)} failed with exit code {proc.returncode}:\n{err.read().decode()[-2000:]}")
        return out.read().decode(), usage.ru_maxrss / 1024


def loaded_blas():
    """Path of the BLAS library this process has loaded (after a torch product), or None if it cannot tell."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "blas" in line and "/" in line}
    return next((os.path.realpath(p) for p in sorted(paths) if "libblas" in p or "openblas" in p), None)


def torch_available(bench):
    """True when torch imports and uses an optimised BLAS; otherwise prints the JSON line that says the comparison
    was skipped, and why."""
    try:
        import torch
    except ImportError:
        print(json.dumps({"bench": bench, "skipped": "python3-torch is not installed for " + sys.executable +
                          "; hint: apt-get install python3-torch and run with /usr/bin/python3"}))
        return False
    # Debian's python3-torch takes its matrix products from whichever libblas.so.3 the alternatives system picks.
    # With python3-torch alone that is the reference BLAS (package libblas3), which made PyTorch's GMVAE epoch 16x
    # slower (31 s instead of ~2): a race against it measures the BLAS, not the framework.
    torch.ones(64, 64) @ torch.ones(64, 64)
    blas = loaded_blas()
    if blas and "openblas" not in blas:
        print(json.dumps({"bench": bench, "skipped": f"PyTorch runs on the reference BLAS ({blas}); hint: apt-get "
                          "install libopenblas0-pthread (the docs' races use OpenBLAS)"}))
        return False
    return True


def race(runs, threads, torch_2t, run_ours_once, run_torch_once):
    """Runs ours and torch alternately, so that a noisy spell hits both; with 2 threads torch runs in each
    "intra x blas" setting (intra, blas) of torch_2t. Returns (ours' results, {setting: torch's results})."""
    settings = [(1, 1)] if threads == 1 else [tuple(int(v) for v in s.split("x")) for s in torch_2t.split(",")]
    ours, torch_runs = [], {s: [] for s in settings}
    for _ in range(runs):
        ours.append(run_ours_once())
        for s in settings:
            torch_runs[s].append(run_torch_once(*s))
    return ours, torch_runs


def report_per_thread_count(bench, args, run_ours, run_torch, fields):
    """For each of args.threads ("1,2"): race run_ours(threads) against run_torch(intra, blas), both returning
    seconds per epoch, and print one JSON line with the medians, the ratio and PyTorch's fastest setting."""
    for threads in (int(t) for t in args.threads.split(",")):
        ours, torch_runs = race(args.runs, threads, args.torch_2t, lambda: run_ours(threads), run_torch)
        ours_s = statistics.median(ours)
        medians = {s: statistics.median(runs) for s, runs in torch_runs.items()}
        best = min(medians, key=medians.get)
        print(json.dumps({
            "bench": bench, **fields, "threads": threads, "epochs": args.epochs, "runs": args.runs,
            "ours_s": round(ours_s, 3), "torch_s": round(medians[best], 3), "ratio": round(ours_s / medians[best], 3),
            "torch_setting": f"intra {best[0]} x blas {best[1]}",
            "torch_settings_s": {f"{s[0]}x{s[1]}": round(m, 3) for s, m in medians.items()},
            "ours_all": [round(r, 3) for r in ours], "torch_all": [round(r, 3) for r in torch_runs[best]],
        }), flush=True)
