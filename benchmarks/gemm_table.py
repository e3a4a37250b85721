#!/usr/bin/env python3
"""Turns bench_gemm's JSON lines (stdin) into the markdown table of docs/benchmarks-gemm.md (stdout).

Usage: ./build/benchmarks/bench_gemm | python3 benchmarks/gemm_table.py
With several runs concatenated on stdin, each figure is the median over the runs (the machine is noisy).
"""
import json
import statistics
import sys


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def main():
    runs = {}
    for line in sys.stdin:
        if line.startswith("{"):
            r = json.loads(line)
            runs.setdefault((r["threads"], r["M"], r["K"], r["N"], r["form"]), []).append(r)
    rows = []
    for group in runs.values():
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
    print(f"Runs per case: {max(r['runs'] for r in rows)} (figures are medians over runs).")
    for t in sorted({r["threads"] for r in rows}):
        peaks = [r["peak_gflops"] for r in rows if r["threads"] == t]
        print(f"FMA peak sampled during the {t}-thread cases: {min(peaks):.1f} to {max(peaks):.1f} GFLOP/s.")


if __name__ == "__main__":
    main()
