#!/usr/bin/env python3
"""Before/after table of two lmc builds by CPU time, for a busy machine.

Where other work shares the machine, wall-clock speeds swing by 2-3x from
minute to minute; the CPU time a command uses (user + system, from
getrusage) swings far less. For each case (FILE, or FILE@BASE for a delta)
this alternates the two builds REPS times, timing `lmc -q -t 1 compress`
(to a file under /tmp) and `lmc -q -t 1 verify` of what it wrote, and
prints each build's ratio and its speed as original bytes per CPU second,
the minimum over the runs. File level: reading, writing and (for deltas)
hashing the base are included.

Usage: scripts/bench_cpu.py OLD_LMC NEW_LMC REPS CASE...
"""
import os, resource, subprocess, sys
old, new, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]); cases = sys.argv[4:]
def cpu(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print("| data | ratio old / new | compress MB/s (CPU) old -> new | decode MB/s (CPU) old -> new |")
print("|---|---|---|---|")
for case in cases:
    f, _, b = case.partition("@")
    base = ["--base", b] if b else []
    n = os.path.getsize(f)
    res = {tag: {"c": [], "d": []} for tag in ("old", "new")}
    for _ in range(reps):
        for tag, lmc in (("old", old), ("new", new)):
            out = f"/tmp/cpu_ab_{tag}.lmc"
            res[tag]["c"].append(cpu([lmc, "-q", "-t", "1", "compress", "-f", f, *base, "-o", out]))
            res[tag]["d"].append(cpu([lmc, "-q", "-t", "1", "verify", out, *base]))
            res[tag]["size"] = os.path.getsize(out)
    name = f.split("/series/")[-1] + (f" vs {os.path.basename(b)}" if b else "")
    r = lambda t: n / res[t]["size"]
    c = lambda t: n / min(res[t]["c"]) / 1e6
    d = lambda t: n / min(res[t]["d"]) / 1e6
    print(f"| {name} ({n/1e6:.1f} MB) | {r('old'):.3f} / {r('new'):.3f} | {c('old'):.0f} -> {c('new'):.0f} | {d('old'):.0f} -> {d('new'):.0f} |", flush=True)
