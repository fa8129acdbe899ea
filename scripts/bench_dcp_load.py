#!/usr/bin/env python3
"""Times dcp.load through FileSystemReader and lmc.torch.StorageReader on
the state dict scripts/bench_dcp.py uses (the newest checkpoint of
target/series), each saved once, loaded --repeat times (median), every load
checked bit for bit; --profile also prints a cProfile of one lmc load.

    target/python-venv/bin/python scripts/bench_dcp_load.py [--series target/series] [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dcp as b  # noqa: E402

import torch.distributed.checkpoint as dcp  # noqa: E402

import lmc.torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=Path, default=Path("target/series"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    args.source = "series"
    _, state = b.states(args)
    d = Path(tempfile.mkdtemp(prefix="bench-dcp-load-"))
    try:
        dcp.save(state, storage_writer=dcp.FileSystemWriter(d / "plain"), no_dist=True)
        dcp.save(state, storage_writer=lmc.torch.StorageWriter(d / "lmc"), no_dist=True)
        readers = {
            "FileSystemReader": lambda: dcp.FileSystemReader(d / "plain"),
            "lmc.torch.StorageReader": lambda: lmc.torch.StorageReader(d / "lmc"),
        }
        for name, make in readers.items():
            times = []
            for _ in range(args.repeat):
                target = b.zeros_tree(state)
                t = time.perf_counter()
                dcp.load(target, storage_reader=make(), no_dist=True)
                times.append(time.perf_counter() - t)
                assert b.same_tree(target, state), f"{name}: the load differs"
            print(f"{name}: median {statistics.median(times):.2f} s of {', '.join(f'{x:.2f}' for x in times)}")
        if args.profile:
            target = b.zeros_tree(state)
            prof = cProfile.Profile()
            prof.runcall(lambda: dcp.load(target, storage_reader=readers["lmc.torch.StorageReader"](), no_dist=True))
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
