#!/usr/bin/env python3
"""Benchmark of the snapshot store on real training series (issue 4).

For each series directory (files named step-*.safetensors, in step order),
on one thread, in one run:
  - lmc alone:  the sum of `lmc compress` of each snapshot on its own;
  - xz -6 of XOR deltas: the first snapshot with xz -6, then each snapshot's
    XOR delta against the one before with xz -6 (from `lmc bench --base`);
  - the store: `lmc snapshot add` of every snapshot (keyframe every K), the
    total size of the store's objects, and the add time;
  - delta compression speed: `lmc compress FILE --base PREV` (the parent
    given as a file), median over the series;
  - restore speed of the deepest chain: `lmc snapshot restore` of the
    snapshot with the deepest chain (median of 3).

Usage: scripts/bench_store.py [--lmc target/release/lmc] [--keyframe-every 11] DIR...
Prints a markdown table per directory.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def mb(n):
    return n / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmc", default="target/release/lmc")
    ap.add_argument("--keyframe-every", type=int, default=11,
                    help="keyframe interval; 11 gives chains of depth 10 (default)")
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    lmc = [a.lmc, "-t", "1"]
    for d in a.dirs:
        files = sorted(os.path.join(d, f) for f in os.listdir(d)
                       if f.startswith("step-") and f.endswith(".safetensors"))
        if len(files) < 2:
            print(f"{d}: fewer than two snapshots, skipped", file=sys.stderr)
            continue
        total = sum(os.path.getsize(f) for f in files)
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.lmc))) as tmp:
            # lmc alone.
            alone = 0
            for f in files:
                out = os.path.join(tmp, "alone.lmc")
                run(lmc + ["-q", "compress", f, "-o", out, "--force"])
                alone += os.path.getsize(out)
            # xz -6 of the first snapshot and of each XOR delta.
            xz = 0
            for i, f in enumerate(files):
                cmd = lmc + ["bench", "--json", "--runs", "1", "--methods", "xz-6+raw", f]
                if i > 0:
                    cmd += ["--base", files[i - 1]]
                doc = json.loads(run(cmd).splitlines()[0])
                row = next(r for r in doc["results"] if r["method"].startswith("xz -6"))
                xz += doc["bytes"] / row["ratio"]
            # Delta compression speed, the parent given as a file.
            speeds = []
            for i in range(1, len(files)):
                out = os.path.join(tmp, "delta.lmc")
                t0 = time.perf_counter()
                run(lmc + ["-q", "compress", files[i], "--base", files[i - 1], "-o", out, "--force"])
                speeds.append(mb(os.path.getsize(files[i])) / (time.perf_counter() - t0))
            # The store.
            store = os.path.join(tmp, "store")
            t0 = time.perf_counter()
            for f in files:
                run(lmc + ["-q", "snapshot", "add", "--keyframe-every", str(a.keyframe_every), store, f])
            add_secs = time.perf_counter() - t0
            listing = json.loads(run(lmc + ["snapshot", "list", "--json", store]))
            snaps = listing["snapshots"]
            stored = sum(s["stored_bytes"] for s in snaps)
            deepest = max(snaps, key=lambda s: (s["depth"], s["step"]))
            times = []
            for _ in range(3):
                out = os.path.join(tmp, "restored")
                t0 = time.perf_counter()
                run(lmc + ["-q", "snapshot", "restore", store, str(deepest["step"]), "-o", out, "--force"])
                times.append(time.perf_counter() - t0)
            restore_mbs = mb(deepest["original_bytes"]) / statistics.median(times)
            run(lmc + ["-q", "snapshot", "verify", store])
        print(f"\n### {d}: {len(files)} snapshots, {mb(total):.1f} MB\n")
        print("| method | stored MB | ratio |")
        print("|---|---|---|")
        for name, n in [("lmc, each snapshot alone", alone),
                        ("xz -6 of the first + each XOR delta", xz),
                        (f"lmc snapshot store (keyframe every {a.keyframe_every})", stored)]:
            print(f"| {name} | {mb(n):.2f} | {total / n:.3f} |")
        print()
        print(f"- delta compression, one thread (`lmc compress FILE --base PREV`, median over the series, "
              f"process start and file mapping included): {statistics.median(speeds):.0f} MB/s")
        print(f"- restore of step {deepest['step']} (chain depth {deepest['depth']}), one thread, "
              f"median of 3: {restore_mbs:.0f} MB/s of output")
        print(f"- adding all {len(files)} snapshots (each restores its parent first): {add_secs:.1f} s, "
              f"{mb(total) / add_secs:.0f} MB/s")


if __name__ == "__main__":
    main()
