#!/usr/bin/env python3
"""How long SnapshotStore.add blocks the caller, with and without
background=True (issue 14): each snapshot of a series is loaded as tensors
(lmc.load of the safetensors file), then added to a fresh store both ways
(run it with RAYON_NUM_THREADS=1 for one thread). Prints, per add, the time until add() returned and, for the
background form, until wait() returned.

Usage: target/python-venv/bin/python scripts/bench_store_background.py DIR
(DIR: a folder of step-*.safetensors; the wheel of this checkout installed,
as scripts/python-tests.sh does).
"""

import os
import statistics
import sys
import tempfile
import time

import lmc


def main():
    d = sys.argv[1]
    files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.startswith("step-"))
    states = []
    with tempfile.TemporaryDirectory(dir="target") as tmp:
        for f in files:
            c = os.path.join(tmp, "x.lmc")
            lmc.compress_file(f, c)
            states.append(lmc.load_file(c, framework="torch"))
    size = os.path.getsize(files[0])
    for mode in ("blocking", "background"):
        with tempfile.TemporaryDirectory(dir="target") as tmp:
            store = lmc.SnapshotStore(os.path.join(tmp, "s"))
            returned, finished = [], []
            for i, sd in enumerate(states):
                t0 = time.perf_counter()
                r = store.add(sd, step=i + 1, background=(mode == "background"))
                t1 = time.perf_counter()
                if mode == "background":
                    r.wait()
                t2 = time.perf_counter()
                returned.append(t1 - t0)
                finished.append(t2 - t0)
            print(f"{mode}: {len(states)} adds of {size / 1e6:.1f} MB; add() returned after "
                  f"{statistics.median(returned) * 1e3:.0f} ms (median), the snapshot was committed after "
                  f"{statistics.median(finished) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
