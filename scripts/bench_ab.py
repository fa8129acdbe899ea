#!/usr/bin/env python3
"""Before/after speed table of two lmc binaries, measured in one run.

On this project's shared 2-core machine, speeds drift by 20-50% from one
minute to the next, so figures from different runs cannot be compared. This
script alternates the two binaries on the same files and thread counts, REPS
rounds, each round one `lmc bench --json` per binary (itself a median of
--runs runs), and reports the median over the rounds of each binary's lmc
speeds, beside memcpy and zstd -3 (raw bytes) from the same rounds: the
ceiling and the everyday alternative.

Usage:
  scripts/bench_ab.py --old OLD_LMC --new NEW_LMC [--reps 3] [--runs 5] [--threads 1,2] CASE...
where CASE is FILE or FILE@BASE (an XOR delta of FILE against BASE).
Prints a markdown table.
"""

import argparse
import json
import statistics
import subprocess
import sys


def bench(lmc, case, threads, runs, methods):
    file, _, base = case.partition("@")
    cmd = [lmc, "-q", "-t", str(threads), "bench", "--json", "--runs", str(runs),
           "--methods", methods, file]
    if base:
        cmd += ["--base", base]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return {x["method"]: x for x in d["results"]}, d["bytes"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("cases", nargs="+")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    print("| data | threads | ratio before / after | compress MB/s before -> after | "
          "decompress MB/s before -> after | memcpy MB/s | zstd -3 MB/s (c / d) |")
    print("|---|---|---|---|---|---|---|")
    for case in a.cases:
        for t in threads:
            old_c, old_d, new_c, new_d, mem, zc, zd = [], [], [], [], [], [], []
            ratios = {}
            for _ in range(a.reps):
                o, _ = bench(a.old, case, t, a.runs, "lmc")
                n, size = bench(a.new, case, t, a.runs, "lmc,memcpy,zstd-3+raw")
                old_c.append(o["lmc"]["compress_mb_per_s"])
                old_d.append(o["lmc"]["decompress_mb_per_s"])
                new_c.append(n["lmc"]["compress_mb_per_s"])
                new_d.append(n["lmc"]["decompress_mb_per_s"])
                mem.append(n["memcpy"]["compress_mb_per_s"])
                z = next(v for k, v in n.items() if k.startswith("zstd -3"))
                zc.append(z["compress_mb_per_s"])
                zd.append(z["decompress_mb_per_s"])
                ratios = (o["lmc"]["ratio"], n["lmc"]["ratio"])
            med = statistics.median
            file, _, base = case.partition("@")
            name = file.split("/")[-2] + "/" + file.split("/")[-1]
            if base:
                name += " vs " + base.split("/")[-1]
            print(f"| {name} ({size / 1e6:.1f} MB) | {t} | {ratios[0]:.3f} / {ratios[1]:.3f} | "
                  f"{med(old_c):.0f} -> {med(new_c):.0f} | {med(old_d):.0f} -> {med(new_d):.0f} | "
                  f"{med(mem):.0f} | {med(zc):.0f} / {med(zd):.0f} |", flush=True)


if __name__ == "__main__":
    main()
