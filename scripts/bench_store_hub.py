#!/usr/bin/env python3
"""The layout issue 14 asked to measure besides reverse chains: deltas
against a keyframe ("hub"). Snapshots are cut into groups of H in step
order, counted from the newest; the newest of each group is stored whole
and every other one as a delta against it (so a restore decodes at most one
delta). Made with plain `lmc compress [--base HUB]`, one thread; prints the
ratio, and the restore of the snapshot farthest from its hub (decompress of
the hub, then of the delta with --base: two processes, median of 3)
against plain decompress of the same file.

Usage: scripts/bench_store_hub.py [--lmc target/release/lmc] [--hub 4,8] DIR...
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{r.stderr}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmc", default="target/release/lmc")
    ap.add_argument("--hub", default="4,8")
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    lmc = [a.lmc, "-t", "1", "-q"]
    for d in a.dirs:
        files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.startswith("step-"))
        n = len(files)
        total = sum(os.path.getsize(f) for f in files)
        print(f"\n{d}: {n} snapshots, {total / 1e6:.1f} MB")
        with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.lmc))) as tmp:
            for h in [int(x) for x in a.hub.split(",")]:
                stored = 0
                worst = None  # (distance, index, hub index)
                for i in range(n):
                    hub = n - 1 - ((n - 1 - i) // h) * h
                    out = os.path.join(tmp, f"{h}-{i}.lmc")
                    cmd = lmc + ["compress", files[i], "-o", out, "--force"]
                    if hub != i:
                        cmd += ["--base", files[hub]]
                    timed(cmd)
                    stored += os.path.getsize(out)
                    if worst is None or hub - i > worst[0]:
                        worst = (hub - i, i, hub)
                _, i, hub = worst
                hub_out = os.path.join(tmp, "hub")
                back = os.path.join(tmp, "back")
                rel = []
                whole = os.path.join(tmp, "whole.lmc")
                timed(lmc + ["compress", files[i], "-o", whole, "--force"])
                for _ in range(3):
                    p = timed(lmc + ["decompress", whole, "-o", back, "--force"])
                    t = timed(lmc + ["decompress", os.path.join(tmp, f"{h}-{hub}.lmc"), "-o", hub_out,
                                     "--force"])
                    t += timed(lmc + ["decompress", os.path.join(tmp, f"{h}-{i}.lmc"), "--base", hub_out,
                                      "-o", back, "--force"])
                    rel.append(p / t)
                print(f"  hub every {h}: ratio {total / stored:.3f}; restore of {os.path.basename(files[i])} "
                      f"({hub - i} steps from its hub): {statistics.median(rel):.2f}x plain decompress")


if __name__ == "__main__":
    main()
