#!/usr/bin/env python3
"""Turns bench_gemm's JSON lines (stdin) into the markdown table of docs/benchmarks-gemm.md (stdout).

Usage: ./build/benchmarks/bench_gemm | python3 benchmarks/gemm_table.py [--quiet FRACTION]
With several runs concatenated on stdin, each figure is the median over the runs (the machine is noisy).
--quiet F keeps only the repetitions whose sampled FMA peak is at least F times the best peak seen for that
thread count, i.e. the cases measured while no other process held a core.
"""
import json
import statistics
import sys


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def main():
    quiet = float(sys.argv[sys.argv.index("--quiet") + 1]) if "--quiet" in sys.argv else 0.0
    lines = [json.loads(line) for line in sys.stdin if line.startswith("{")]
    best_peak = {}
    for r in lines:
        best_peak[r["threads"]] = max(best_peak.get(r["threads"], 0), r["peak_gflops"])
    runs = {}
    for r in lines:
        if r["peak_gflops"] >= quiet * best_peak[r["threads"]]:
            runs.setdefault((r["threads"], r["M"], r["K"], r["N"], r["form"]), []).append(r)
    order = {}
    for r in lines:
        order.setdefault((r["threads"], r["M"], r["K"], r["N"], r["form"]), len(order))
    rows = []
    for _, group in sorted(runs.items(), key=lambda item: order[item[0]]):
        row = dict(group[0])
        for key in ("ours_gflops", "openblas_gflops", "peak_gflops", "ratio_vs_openblas", "ratio_vs_peak"):
            values = [r[key] for r in group if r[key] is not None]
            row[key] = statistics.median(values) if values else None
        row["runs"] = len(group)
        rows.append(row)
    print("| M x K x N | form | threads | ours GFLOP/s | OpenBLAS GFLOP/s | ours / OpenBLAS | ours / peak |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['M']} x {r['K']} x {r['N']} | {r['form']} | {r['threads']} | {r['ours_gflops']:.1f} | "
              f"{fmt(r['openblas_gflops'], '.1f')} | {fmt(r['ratio_vs_openblas'], '.2f')} | {r['ratio_vs_peak']:.2f} |")
    print()
    counts = sorted({r["runs"] for r in rows})
    print(f"Runs per case: {counts[0]} to {counts[-1]} (figures are medians over runs)"
          + (f"; only runs whose sampled peak was >= {quiet} x the best." if quiet else "."))
    for t in sorted({r["threads"] for r in rows}):
        peaks = [r["peak_gflops"] for r in rows if r["threads"] == t]
        print(f"FMA peak sampled during the {t}-thread cases: {min(peaks):.1f} to {max(peaks):.1f} GFLOP/s.")


if __name__ == "__main__":
    main()
