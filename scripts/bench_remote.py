#!/usr/bin/env python3
"""Object storage benchmark (issue 16), against the local S3 server.

1. Makes a ~1 GB checkpoint from the project's training series
   (target/series/finetune, scripts/gen-series.sh): the BF16 weights, fp32
   master weights and AdamW state of steps 20, 50 and 80 and the BF16
   weights of step 10, merged into one safetensors file with keys
   "step-20/master-fp32/<name>" and so on (the safetensors format written
   directly: an 8-byte length, the JSON header, the tensors' bytes).
2. Upload and download through lmc (`lmc compress X -o s3://...`,
   `lmc decompress s3://... -o Y`) against a plain multipart upload and a
   plain download of the same compressed bytes with the same client
   (crates/lmc-remote/examples/objcopy.rs: lmc-remote's Upload and Object,
   no coding). Wall time (median of --runs) and peak memory (max RSS from
   /usr/bin/time -v); the runs alternate.
3. One tensor of the 1 GB container read from S3 (`lmc.safe_open(url)
   .get_tensor(name)`, in Python): the bytes that cross the connection,
   counted by a TCP proxy in front of the server, as a share of the
   container, and the time against downloading the whole object.

    target/python-venv/bin/python scripts/bench_remote.py [--runs 3]

Needs target/release/lmc and the objcopy example (built here with cargo),
the lmc wheel in target/python-venv (scripts/python-tests.sh), and
moto_server (scripts/s3-server.sh, started here unless
LMC_TEST_S3_ENDPOINT names a running one). Files go to target/bench-remote/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "target" / "bench-remote"
SERIES = ROOT / "target" / "series" / "finetune"
LMC = ROOT / "target" / "release" / "lmc"
OBJCOPY = ROOT / "target" / "release" / "examples" / "objcopy"

# (step, kinds): ~1.0 GB in all.
PICK = [(20, ("weights-bf16", "master-fp32", "optim")),
        (50, ("weights-bf16", "master-fp32", "optim")),
        (80, ("weights-bf16", "master-fp32", "optim")),
        (10, ("weights-bf16",))]


def read_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return 8 + n, json.loads(f.read(n))


def make_checkpoint(out: Path) -> None:
    """Merges the picked files' tensors into one safetensors file."""
    entries = []  # (new name, dtype, shape, source path, absolute start, length)
    meta = {"source": "target/series/finetune", "steps": "10,20,50,80"}
    for step, kinds in PICK:
        for kind in kinds:
            src = SERIES / kind / f"step-{step:06d}.safetensors"
            base, header = read_header(src)
            items = [(k, v) for k, v in header.items() if k != "__metadata__"]
            items.sort(key=lambda kv: kv[1]["data_offsets"][0])
            for name, info in items:
                a, b = info["data_offsets"]
                entries.append((f"step-{step}/{kind}/{name}", info["dtype"], info["shape"], src, base + a, b - a))
    header = {"__metadata__": meta}
    off = 0
    for name, dtype, shape, _, _, n in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = out.with_suffix(".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        files: dict[Path, object] = {}
        for _, _, _, src, start, n in entries:
            g = files.setdefault(src, open(src, "rb"))
            g.seek(start)
            f.write(g.read(n))
        for g in files.values():
            g.close()
    tmp.rename(out)


class CountingProxy:
    """A TCP proxy in front of the server that counts the bytes both ways."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.up = 0
        self.down = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, up: bool) -> None:
        try:
            while True:
                d = a.recv(1 << 16)
                if not d:
                    break
                with self.lock:
                    if up:
                        self.up += len(d)
                    else:
                        self.down += len(d)
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self) -> None:
        while True:
            c, _ = self.sock.accept()
            s = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, False), daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.up = self.down = 0


def anon_kb(pid: int) -> int:
    """RssAnon of `pid` (kB): its memory less mapped files (lmc maps its
    input, which max RSS counts in full)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


SERVER_PID: int | None = None


def cpu_secs(pid: int | None) -> float:
    """User + system CPU seconds `pid` has used (0 if unknown)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], env: dict) -> tuple[float, int, int, float, float]:
    """Wall seconds, max RSS (MB, /usr/bin/time -v), peak anonymous RSS
    (MB, sampled every 10 ms), the command's CPU seconds and the S3
    server's CPU seconds meanwhile, of `cmd`, which must succeed."""
    server0 = cpu_secs(SERVER_PID)
    with tempfile.NamedTemporaryFile("r") as tf:
        t = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-v", "-o", tf.name, *cmd], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = 0
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            for k in kids:
                peak = max(peak, anon_kb(k))
            time.sleep(0.01)
        secs = time.perf_counter() - t
        err = p.stderr.read()
        if p.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{err}")
        report = tf.read()
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
        cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", report))
    return secs, rss // 1024, peak // 1024, cpu, cpu_secs(SERVER_PID) - server0


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 24):
            h.update(b)
    return h.hexdigest()


def http(method: str, url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=120).read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep target/bench-remote")
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    ckpt = WORK / "ckpt-1g.safetensors"
    if not ckpt.exists():
        make_checkpoint(ckpt)
    for cmd in (["cargo", "build", "--release", "--quiet", "-p", "lmc-cli"],
                ["cargo", "build", "--release", "--quiet", "-p", "lmc-remote", "--example", "objcopy"]):
        subprocess.run(cmd, cwd=ROOT, check=True)

    started = None
    endpoint = os.environ.get("LMC_TEST_S3_ENDPOINT")
    if not endpoint:
        line = subprocess.run([str(ROOT / "scripts" / "s3-server.sh"), "start"], cwd=ROOT, check=True,
                              stdout=subprocess.PIPE, text=True).stdout
        endpoint = re.search(r"LMC_TEST_S3_ENDPOINT=(\S+)", line).group(1)
        started = int(re.search(r"LMC_S3_PID=(\d+)", line).group(1))
        global SERVER_PID
        SERVER_PID = started
    try:
        run(args, ckpt, endpoint)
    finally:
        if started:
            os.kill(started, 15)
        if not args.keep:
            for p in WORK.iterdir():
                if p != ckpt:
                    p.unlink()


def run(args: argparse.Namespace, ckpt: Path, endpoint: str) -> None:
    bucket = f"bench-{os.getpid()}"
    http("PUT", f"{endpoint}/{bucket}")
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
    size = ckpt.stat().st_size
    lmc_file = WORK / "ckpt-1g.safetensors.lmc"
    out = WORK / "out.safetensors"
    got = WORK / "got.lmc"
    load = os.getloadavg()

    # The compressed bytes, made locally: what the plain client moves; and
    # local compress/decompress times for reference.
    local_c = timed([str(LMC), "compress", str(ckpt), "-o", str(lmc_file), "--force", "-q"], env)
    local_d = timed([str(LMC), "decompress", str(lmc_file), "-o", str(out), "--force", "-q"], env)
    assert sha(out) == sha(ckpt)
    clen = lmc_file.stat().st_size
    want = sha(ckpt)
    want_c = sha(lmc_file)

    rows: dict[str, list[tuple[float, int, int]]] = {k: [] for k in
                                                ("lmc compress -> s3", "objcopy put (plain)",
                                                 "lmc decompress <- s3", "objcopy get (plain)")}
    for i in range(args.runs):
        key_l, key_p = f"lmc-{i}.lmc", f"plain-{i}.lmc"
        rows["lmc compress -> s3"].append(
            timed([str(LMC), "compress", str(ckpt), "-o", f"s3://{bucket}/{key_l}", "-q"], env))
        rows["objcopy put (plain)"].append(
            timed([str(OBJCOPY), "put", str(lmc_file), f"s3://{bucket}/{key_p}"], env))
        rows["lmc decompress <- s3"].append(
            timed([str(LMC), "decompress", f"s3://{bucket}/{key_l}", "-o", str(out), "--force", "-q"], env))
        assert sha(out) == want, "lmc decompress from s3 gave other bytes"
        rows["objcopy get (plain)"].append(
            timed([str(OBJCOPY), "get", f"s3://{bucket}/{key_p}", str(got)], env))
        assert sha(got) == want_c, "the plain download gave other bytes"
        if i == 0:
            # What lmc uploaded is what it writes locally.
            timed([str(OBJCOPY), "get", f"s3://{bucket}/{key_l}", str(got)], env)
            assert sha(got) == want_c, "lmc's upload differs from its local output"
        http("DELETE", f"{endpoint}/{bucket}/{key_l}")
        if i + 1 < args.runs:
            http("DELETE", f"{endpoint}/{bucket}/{key_p}")
    med = {k: (statistics.median(x[0] for x in v), max(x[1] for x in v), max(x[2] for x in v),
               statistics.median(x[3] for x in v), statistics.median(x[4] for x in v))
           for k, v in rows.items()}

    # One tensor from the container on S3.
    key = f"plain-{args.runs - 1}.lmc"
    host, port = endpoint.removeprefix("http://").rstrip("/").split(":")
    proxy = CountingProxy((host, int(port)))
    py = ROOT / "target" / "python-venv" / "bin" / "python"
    probe = r"""
import json, sys, time, lmc
url, names = sys.argv[1], sys.argv[2:]
res = []
for n in names:
    t = time.perf_counter()
    with lmc.safe_open(url, framework="np") as f:
        a = f.get_tensor(n)
    res.append((n, time.perf_counter() - t, a.nbytes))
print(json.dumps(res))
"""
    _, header = read_header(ckpt)
    sizes = sorted(((k, v["data_offsets"][1] - v["data_offsets"][0]) for k, v in header.items()
                    if k != "__metadata__"), key=lambda kv: kv[1])
    picks = [next(k for k, n in sizes if "encoder.layer.5.attention.self.query.weight" in k and "master" in k),
             sizes[-1][0]]
    one = []
    for name in picks:
        penv = dict(env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
        proxy.reset()
        res = json.loads(subprocess.run([str(py), "-c", probe, f"s3://{bucket}/{key}", name], env=penv,
                                        check=True, stdout=subprocess.PIPE, text=True).stdout)
        moved = proxy.up + proxy.down
        times = []
        for _ in range(args.runs):
            r = json.loads(subprocess.run([str(py), "-c", probe, f"s3://{bucket}/{key}", name], env=env,
                                          check=True, stdout=subprocess.PIPE, text=True).stdout)
            times.append(r[0][1])
        one.append((name, res[0][2], moved, statistics.median(times)))
    # The same reads over file:// (object_store's local store: ranged reads
    # are positional reads), against a plain copy of the whole object.
    furl = lmc_file.resolve().as_uri()
    local_one = []
    for name in picks:
        times = []
        for _ in range(args.runs):
            r = json.loads(subprocess.run([str(py), "-c", probe, furl, name], env=env,
                                          check=True, stdout=subprocess.PIPE, text=True).stdout)
            times.append(r[0][1])
        local_one.append((name, statistics.median(times)))
    fget = statistics.median(timed([str(OBJCOPY), "get", furl, str(got)], env)[0] for _ in range(args.runs))

    # What one ranged GET of 1 kB costs moto, on this object and on a 1 MB one.
    def ranged_get(k: str) -> float:
        req = urllib.request.Request(f"{endpoint}/{bucket}/{k}", headers={"Range": "bytes=1000-1999"})
        t = time.perf_counter()
        urllib.request.urlopen(req, timeout=120).read()
        return time.perf_counter() - t

    small = WORK / "small.bin"
    with open(lmc_file, "rb") as f:
        small.write_bytes(f.read(1_000_000))
    timed([str(OBJCOPY), "put", str(small), f"s3://{bucket}/small.bin"], env)
    range_big = statistics.median(ranged_get(key) for _ in range(5))
    range_small = statistics.median(ranged_get("small.bin") for _ in range(5))
    http("DELETE", f"{endpoint}/{bucket}/{key}")
    http("DELETE", f"{endpoint}/{bucket}/small.bin")

    print(f"\nload average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; now {os.getloadavg()[0]:.2f}")
    print(f"checkpoint {size / 1e6:.1f} MB, container {clen / 1e6:.1f} MB (ratio {size / clen:.3f}); "
          f"local compress {local_c[0]:.2f} s ({local_c[1]} MB max RSS, {local_c[2]} MB anonymous), "
          f"local decompress {local_d[0]:.2f} s ({local_d[1]} MB max RSS, {local_d[2]} MB anonymous)\n")
    print("| operation (median of %d) | time (s) | MB/s of the checkpoint | max RSS (MB) | peak anonymous RSS (MB) "
          "| client CPU (s) | server CPU (s) |" % args.runs)
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, (s, r, a, c, sc) in med.items():
        print(f"| {k} | {s:.2f} | {size / 1e6 / s:.0f} | {r} | {a} | {c:.2f} | {sc:.2f} |")
    up = med["objcopy put (plain)"][0] / med["lmc compress -> s3"][0]
    down = med["objcopy get (plain)"][0] / med["lmc decompress <- s3"][0]
    print(f"\nlmc's speed / the plain client's: upload {up:.2f}x, download {down:.2f}x (target >= 0.8)")
    whole = med["objcopy get (plain)"][0]
    print("\n| tensor | tensor (MB) | bytes moved (MB) | % of the container | time (s) | % of the whole download |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, n, moved, t in one:
        print(f"| `{name}` | {n / 1e6:.2f} | {moved / 1e6:.2f} | {100 * moved / clen:.2f} | {t:.3f} | "
              f"{100 * t / whole:.1f} |")
    print(f"\nover file://: the whole object copied in {fget:.3f} s")
    print("| tensor | time (s) | % of the whole copy |")
    print("| --- | ---: | ---: |")
    for name, t in local_one:
        print(f"| `{name}` | {t:.3f} | {100 * t / fget:.1f} |")
    print(f"\nmoto: one ranged GET of 1 kB takes {range_big * 1e3:.0f} ms on the {clen / 1e6:.0f} MB object, "
          f"{range_small * 1e3:.1f} ms on a 1 MB one")
    print(json.dumps({"rows": med, "one": one, "local_one": local_one, "fget": fget, "range_big": range_big,
                      "range_small": range_small, "size": size, "clen": clen}))


if __name__ == "__main__":
    main()
