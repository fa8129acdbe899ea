#!/usr/bin/env python3
"""Benchmark of the snapshot store on real training series (issues 4, 14).

For each series directory (files named step-*.safetensors, in step order),
on one thread (`lmc -t 1`), in one run, every number a whole command
(process start, reading and writing files included):

  - plain lmc: `lmc compress` and `lmc decompress` of each snapshot on its
    own (the reference speeds; median over the snapshots);
  - for each store layout asked for (an lmc binary and a --keyframe-every):
    `lmc snapshot add` of every snapshot in turn (median add speed, total
    stored bytes, hence the store ratio), `lmc snapshot restore` of the
    newest snapshot (median of --reps) and of every snapshot once (the
    slowest, relative to plain decompress of the same file).

Each add and restore is paired with the plain command on the same file run
just before it (`lmc compress`, `lmc decompress` of a container made
beforehand), and the "x plain" figures are medians of those paired ratios,
so that load from other work on the machine affects both sides alike.

Usage:
  scripts/bench_store.py --lmc NEW [--old OLD] [--new-k 16,0] [--old-k 8,0] DIR...

K = 0 means one keyframe (old layout) / one whole snapshot (new layout):
--keyframe-every is set past the number of snapshots. --new-k default
means the store's default. A K of the new layout with "+defer" (such as
default+defer) adds with `snapshot add --defer` and then runs `snapshot
finish` (what a training process does on another thread), timed apart: the
add column is then the time a training job waits, and the finish column the
re-encoding that follows. Prints a markdown table per directory.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr}")
    return r.stdout


def timed(cmd):
    t0 = time.perf_counter()
    run(cmd)
    return time.perf_counter() - t0


def mbs(nbytes, secs):
    return nbytes / 1e6 / secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmc", default="target/release/lmc", help="the lmc under test (new layout)")
    ap.add_argument("--old", help="an lmc from before reverse deltas, to compare with")
    ap.add_argument("--new-k", default="default,0", help="keyframe intervals for --lmc (default: the store's)")
    ap.add_argument("--old-k", default="8,0", help="keyframe intervals for --old")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--reps", type=int, default=5, help="restores of the newest snapshot (median)")
    ap.add_argument("--newest-only", action="store_true",
                    help="restore the newest snapshot only (the slowest-restore columns then show it too)")
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    layouts = [("new", a.lmc, k) for k in a.new_k.split(",")]
    if a.old:
        layouts += [("old", a.old, k) for k in a.old_k.split(",")]
    results = []
    for d in a.dirs:
        files = sorted(os.path.join(d, f) for f in os.listdir(d)
                       if f.startswith("step-") and f.endswith(".safetensors"))
        if len(files) < 2:
            print(f"{d}: fewer than two snapshots, skipped", file=sys.stderr)
            continue
        n = len(files)
        sizes = [os.path.getsize(f) for f in files]
        total = sum(sizes)
        tmpdir = os.path.dirname(os.path.abspath(a.lmc))
        with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
            lmc = [a.lmc, "-t", "1", "-q"]
            comp, decomp = [], []
            alone = 0
            plain = []  # each snapshot's plain container
            for i, (f, size) in enumerate(zip(files, sizes)):
                out = os.path.join(tmp, f"alone-{i}.lmc")
                comp.append(mbs(size, timed(lmc + ["compress", f, "-o", out, "--force"])))
                alone += os.path.getsize(out)
                plain.append(out)
            back = os.path.join(tmp, "back")

            def plain_compress(i):
                out = os.path.join(tmp, "again.lmc")
                return timed(lmc + ["compress", files[i], "-o", out, "--force"])

            def plain_decompress(i):
                return timed(lmc + ["decompress", plain[i], "-o", back, "--force"])

            for i in range(n):
                decomp.append(mbs(sizes[i], plain_decompress(i)))
            row = {"dir": d, "snapshots": n, "bytes": total,
                   "plain_compress_mbs": statistics.median(comp),
                   "plain_decompress_mbs": statistics.median(decomp),
                   "alone_ratio": total / alone, "layouts": []}
            for kind, binary, k_asked in layouts:
                defer = k_asked.endswith("+defer")
                k = k_asked.removesuffix("+defer")
                store = os.path.join(tmp, f"store-{kind}-{k_asked}")
                cmd = [binary, "-t", "1", "-q", "snapshot"]
                kf = [] if k == "default" else ["--keyframe-every", str(n + 1 if k == "0" else int(k))]
                adds, add_rel, finish_rel = [], [], []
                for i, (f, size) in enumerate(zip(files, sizes)):
                    p = plain_compress(i)
                    t = timed(cmd + ["add", *kf, *(["--defer"] if defer else []), store, f])
                    adds.append(mbs(size, t))
                    add_rel.append(p / t)
                    if defer:
                        finish_rel.append(timed(cmd + ["finish", store]) / p)
                listing = json.loads(run([binary, "snapshot", "list", "--json", store]))
                snaps = listing["snapshots"]
                stored = sum(s["stored_bytes"] for s in snaps)
                restore = []  # (step, depth, MB/s, relative to plain decompress of that file)
                out = os.path.join(tmp, "restored")
                for i, s in enumerate(snaps):
                    if a.newest_only and i < n - 1:
                        continue
                    pairs = []
                    for _ in range(a.reps if i == n - 1 else 1):
                        p = plain_decompress(i)
                        t = timed(cmd + ["restore", store, str(s["step"]), "-o", out, "--force"])
                        pairs.append((t, p / t))
                    restore.append((s["step"], s["depth"],
                                    mbs(sizes[i], statistics.median(t for t, _ in pairs)),
                                    statistics.median(r for _, r in pairs)))
                run(cmd + ["verify", store])
                worst = min(restore, key=lambda r: r[3])
                row["layouts"].append({
                    "layout": kind, "keyframe_every": listing["keyframe_every"], "k": k, "defer": defer,
                    "finish_x_compress": statistics.median(finish_rel) if defer else None,
                    "ratio": total / stored,
                    "add_mbs": statistics.median(adds),
                    "add_rel": statistics.median(add_rel),
                    "restore_newest_mbs": restore[-1][2], "restore_newest_rel": restore[-1][3],
                    "restore_worst_step": worst[0], "restore_worst_depth": worst[1],
                    "restore_worst_mbs": worst[2], "restore_worst_rel": worst[3],
                    "restore_median_rel": statistics.median(r[3] for r in restore),
                    "max_depth": max(s["depth"] for s in snaps),
                })
        results.append(row)
        print(f"\n### {d}: {n} snapshots, {total / 1e6:.1f} MB\n")
        print(f"plain lmc, one thread: compress {row['plain_compress_mbs']:.0f} MB/s, "
              f"decompress {row['plain_decompress_mbs']:.0f} MB/s (medians over the snapshots), "
              f"ratio {row['alone_ratio']:.3f}\n")
        print("| layout | ratio | add MB/s (x plain compress) | restore newest MB/s (x plain) "
              "| slowest restore MB/s (x plain), step, depth | median restore x plain | deepest chain |")
        print("|---|---|---|---|---|---|---|")
        for r in row["layouts"]:
            name = {"new": "reverse deltas", "old": "forward deltas"}[r["layout"]]
            kdesc = "one keyframe" if r["k"] == "0" else f"keyframe_every {r['keyframe_every']}"
            if r["layout"] == "new" and r["k"] == "0":
                kdesc = "no bound"
            if r["defer"]:
                kdesc += (f", add --defer (then finish: {r['finish_x_compress']:.2f}x the time of "
                          "plain compress)")
            print(f"| {name}, {kdesc} | {r['ratio']:.3f} | {r['add_mbs']:.0f} ({r['add_rel']:.2f}x) "
                  f"| {r['restore_newest_mbs']:.0f} ({r['restore_newest_rel']:.2f}x) "
                  f"| {r['restore_worst_mbs']:.0f} ({r['restore_worst_rel']:.2f}x), "
                  f"{r['restore_worst_step']}, {r['restore_worst_depth']} "
                  f"| {r['restore_median_rel']:.2f}x | {r['max_depth']} |")
        sys.stdout.flush()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
