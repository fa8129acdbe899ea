#!/usr/bin/env python3
"""Measure the specialised float compressors a user would pick instead of lmc.

On the same bytes as `lmc bench` (a checkpoint file, or with --base its XOR
delta against the previous snapshot), this times:

- ZipNN (`zipnn`, arXiv 2411.05239): byte mode with bytearray_dtype set to
  the tensors' dtype (its byte grouping of bfloat16/float32 plus Huffman or
  zstd per chunk, method AUTO).
- OpenZL (`openzl`): a graph of its BFloat16Deconstruct / Float32Deconstruct /
  Float16Deconstruct node, the exponent stream to its order-0 entropy graph
  and the sign+fraction lanes split (TransposeSplit) into entropy graphs too;
  and beside it OpenZL's generic `graphs.Compress` on the same typed input.
- python-blosc2 (`blosc2`): zstd at clevel 5 (its default) after SHUFFLE,
  and after BITSHUFFLE, typesize set to the dtype's width.
- lmc itself, through `lmc bench --methods lmc --json` on the same bytes,
  where target/release/lmc exists.

Each tool runs on the whole file (typed as the dtype with the most tensor
bytes) and on the tensors of each float dtype, concatenated in file order.
Every round trip is compared byte for byte with the original; a tool that is
not installed, raises, or gives back other bytes is reported as such in the
table. Speeds are MB/s (10^6 bytes) of original data, medians of up to --runs
runs (fewer once a tool's runs took --budget seconds).

Run it through scripts/peers.sh, which makes a virtual environment with the
packages. Output: a markdown table on stdout; --json FILE also writes JSON.
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# Float dtypes the tools know, as safetensors names them: (width, ZipNN name).
FLOATS = {"BF16": (2, "bfloat16"), "F16": (2, "float16"), "F32": (4, "float32")}

WIDTHS = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}

# ---------------------------------------------------------------------------
# Checkpoint bytes
# ---------------------------------------------------------------------------


def tensors_of(data, raw_dtype=None):
    """[(name, dtype, shape, start, end)] in file order (offsets into data)."""
    if raw_dtype:
        w = WIDTHS[raw_dtype]
        n = len(data) // w * w
        return [("data", raw_dtype, [n // w], 0, n)]
    if len(data) < 8:
        raise ValueError("too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n + 8 > len(data) or data[8:9] != b"{":
        raise ValueError("not a safetensors file (use --dtype for a flat array)")
    header = json.loads(bytes(data[8 : 8 + n]))
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        out.append((name, info["dtype"], info["shape"], 8 + n + s, 8 + n + e))
    out.sort(key=lambda t: t[3])
    return out


def xor_delta(data, tensors, base, base_tensors):
    """The file with every tensor that base has under the same name, dtype and
    shape XORed with it; all other bytes as they are (as `lmc bench --base`)."""
    theirs = {t[0]: t for t in base_tensors}
    out = np.frombuffer(data, np.uint8).copy()
    b = np.frombuffer(base, np.uint8)
    matched = xored = 0
    for name, dtype, shape, s, e in tensors:
        t = theirs.get(name)
        if t and t[1] == dtype and list(t[2]) == list(shape) and t[4] - t[3] == e - s:
            np.bitwise_xor(out[s:e], b[t[3] : t[4]], out=out[s:e])
            matched += 1
            xored += e - s
    return out.tobytes(), matched, xored


def subsets(data, tensors):
    """The byte sets measured: the whole file typed as its main float dtype,
    then the tensors of each float dtype. [(label, dtype, bytes, count)]"""
    by_dtype = {}
    for name, dtype, shape, s, e in tensors:
        if dtype in FLOATS:
            by_dtype.setdefault(dtype, []).append((s, e))
    out = []
    if by_dtype:
        main = max(by_dtype, key=lambda d: sum(e - s for s, e in by_dtype[d]))
        out.append((f"whole file (as {main})", main, data, None))
    for dtype, spans in by_dtype.items():
        joined = b"".join(data[s:e] for s, e in spans)
        out.append((f"{dtype} tensors", dtype, joined, len(spans)))
    return out


# ---------------------------------------------------------------------------
# Tools: each a name, a setting, and make(dtype, threads) -> (compress, decompress)
# ---------------------------------------------------------------------------


def zipnn_tool(dtype, threads):
    import warnings

    warnings.filterwarnings("ignore")  # torch's deprecation warnings on import
    from zipnn import ZipNN

    z = ZipNN(input_format="byte", bytearray_dtype=FLOATS[dtype][1], threads=threads)
    # ZipNN rotates the sign bit of float input in place, in the caller's
    # buffer (even a bytes object): give it a private copy, made untimed.
    return (lambda b: z.compress(b)), (lambda c: z.decompress(c)), "mutable"


def openzl_graph(zl, c, dtype):
    entropy = zl.graphs.Entropy()
    lanes = zl.nodes.TransposeSplit()(c, entropy(c))
    if dtype == "BF16":
        # The sign+fraction of BF16 is one byte: straight to the entropy graph.
        return zl.nodes.BFloat16Deconstruct()(c, sign_frac=entropy(c), exponent=entropy(c))
    if dtype == "F16":
        return zl.nodes.Float16Deconstruct()(c, sign_frac=lanes, exponent=entropy(c))
    return zl.nodes.Float32Deconstruct()(c, sign_frac=lanes, exponent=entropy(c))


def openzl_tool(dtype, threads, generic=False):
    import openzl.ext as zl

    w = FLOATS[dtype][0]
    c = zl.Compressor()
    g = zl.graphs.Compress()(c) if generic else openzl_graph(zl, c, dtype)
    c.select_starting_graph(g)
    uint = {2: np.uint16, 4: np.uint32}[w]

    def compress(b):
        # A numeric input wants whole elements: pad the tail (at most w-1 bytes).
        pad = (-len(b)) % w
        arr = np.frombuffer(b + bytes(pad) if pad else b, uint)
        cctx = zl.CCtx()
        cctx.ref_compressor(c)
        cctx.set_parameter(zl.CParam.FormatVersion, zl.MAX_FORMAT_VERSION)
        return struct.pack("<Q", len(b)) + cctx.compress([zl.Input(zl.Type.Numeric, arr)])

    def decompress(z):
        (n,) = struct.unpack("<Q", z[:8])
        outs = zl.DCtx().decompress(z[8:])
        return outs[0].content.as_bytes()[:n]

    return compress, decompress, None


def blosc2_tool(dtype, threads, bitshuffle=False):
    import blosc2

    w = FLOATS[dtype][0]
    f = blosc2.Filter.BITSHUFFLE if bitshuffle else blosc2.Filter.SHUFFLE

    def compress(b):
        return blosc2.compress2(
            b, codec=blosc2.Codec.ZSTD, clevel=5, typesize=w, filters=[f], nthreads=threads
        )

    return compress, (lambda c: blosc2.decompress2(c, nthreads=threads)), None


def version(pkg):
    try:
        from importlib.metadata import version as v

        return v(pkg)
    except Exception:
        return "not installed"


TOOLS = [
    ("zipnn", "ZipNN", "byte mode, bytearray_dtype, method AUTO", zipnn_tool),
    ("openzl", "OpenZL", "*Deconstruct + entropy", lambda d, t: openzl_tool(d, t)),
    ("openzl", "OpenZL", "generic graphs.Compress", lambda d, t: openzl_tool(d, t, generic=True)),
    ("blosc2", "blosc2", "shuffle + zstd 5", lambda d, t: blosc2_tool(d, t)),
    ("blosc2", "blosc2", "bitshuffle + zstd 5", lambda d, t: blosc2_tool(d, t, bitshuffle=True)),
]

# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def timed(runs, budget, fn, prepare=None):
    """Median seconds of up to `runs` calls of fn(prepare()), fewer once the
    calls took `budget` seconds; returns (median, runs, last result)."""
    times, start, result = [], time.perf_counter(), None
    while len(times) < runs and (not times or time.perf_counter() - start < budget):
        arg = prepare() if prepare else None
        t = time.perf_counter()
        result = fn(arg)
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(times), result


def measure(make, dtype, data, args):
    """One tool on one byte set: a result row (dict)."""
    try:
        compress, decompress, flags = make(dtype, args.threads)
    except ImportError as e:
        return {"status": f"not installed ({e})"}
    except Exception as e:  # noqa: BLE001 - report whatever the tool raised
        return {"status": f"failed to set up: {type(e).__name__}: {e}"}
    notes = []
    try:
        if flags == "mutable":
            probe = bytearray(data)
            compress(probe)
            if probe != data:
                notes.append("compress modified its input buffer in place")
            del probe
            tc, rc, packed = timed(args.runs, args.budget, compress, lambda: bytearray(data))
        else:
            tc, rc, packed = timed(args.runs, args.budget, lambda _: compress(data))
        td, rd, back = timed(args.runs, args.budget, lambda _: decompress(packed))
    except Exception as e:  # noqa: BLE001
        return {"status": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    n = len(data)
    row = {
        "compressed_bytes": len(packed),
        "ratio": n / len(packed),
        "compress_mb_per_s": n / 1e6 / tc,
        "decompress_mb_per_s": n / 1e6 / td,
        "runs": rc,
        "decompress_runs": rd,
        "notes": notes,
    }
    row["status"] = "ok" if bytes(back) == data else "ROUND TRIP FAILED: the bytes differ"
    return row


def lmc_row(lmc, path, base, data, dtype, whole, args):
    """lmc on the same bytes, through `lmc bench --methods lmc --json`."""
    if not lmc.exists():
        return {"status": f"not built ({lmc}; run cargo build --release -p lmc-cli)"}
    cmd = [str(lmc), "bench", "--methods", "lmc", "--json", "--runs", str(args.runs)]
    cmd += ["--budget", str(args.budget), "--threads", str(args.threads)]
    tmp = None
    if whole:
        cmd.append(str(path))
        if base:
            cmd += ["--base", str(base)]
        if args.dtype:
            cmd += ["--dtype", args.dtype]
    else:
        # The tensors of one dtype as a flat array (XORed already for a delta).
        tmp = tempfile.NamedTemporaryFile(suffix=".bin", dir=ROOT / "target", delete=False)
        tmp.write(data)
        tmp.close()
        cmd += [tmp.name, "--dtype", dtype]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            return {"status": f"failed: {out.stderr.strip()[:200]}"}
        rep = json.loads(out.stdout.splitlines()[0])
        if rep["bytes"] != len(data):
            return {"status": f"measured {rep['bytes']} bytes, not {len(data)}"}
        r = rep["results"][0]
        return {
            "compressed_bytes": r["compressed_bytes"],
            "ratio": r["ratio"],
            "compress_mb_per_s": r["compress_mb_per_s"],
            "decompress_mb_per_s": r["decompress_mb_per_s"],
            "runs": r["runs"],
            "decompress_runs": r["decompress_runs"],
            "notes": [],
            "status": "ok",  # lmc bench fails on a round trip that differs
        }
    finally:
        if tmp:
            os.unlink(tmp.name)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--base", nargs="+", type=Path, default=[],
                   help="one previous snapshot a file: measure the XOR delta")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--budget", type=float, default=3.0,
                   help="seconds after which a tool stops repeating (default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for ZipNN, blosc2 and lmc (OpenZL has one); default 1")
    p.add_argument("--tools", default="zipnn,openzl,blosc2,lmc",
                   help="comma-separated subset of zipnn,openzl,blosc2,lmc")
    p.add_argument("--dtype", help="treat the files as flat arrays of this dtype (BF16, F16, F32)")
    p.add_argument("--lmc", type=Path, default=ROOT / "target/release/lmc")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args()
    if args.base and len(args.base) != len(args.files):
        p.error(f"--base takes one base a file: {len(args.files)} files but {len(args.base)} bases")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.dtype:
        args.dtype = args.dtype.upper()
        if args.dtype not in FLOATS:
            p.error(f"--dtype must be one of {', '.join(FLOATS)}")
    chosen = set(args.tools.split(","))
    unknown = chosen - {"zipnn", "openzl", "blosc2", "lmc"}
    if unknown:
        p.error(f"unknown tools: {', '.join(sorted(unknown))}")

    versions = {k: version(k) for k in ("zipnn", "openzl", "blosc2", "numpy")}
    reports, failed = [], False
    for i, path in enumerate(args.files):
        data = path.read_bytes()
        tensors = tensors_of(data, args.dtype)
        base = args.base[i] if args.base else None
        if base:
            b = base.read_bytes()
            data, matched, xored = xor_delta(data, tensors, b, tensors_of(b, args.dtype))
            what = (f"XOR delta against {base}: {matched} of {len(tensors)} tensors matched "
                    f"by name, dtype and shape ({xored} bytes XORed)")
        else:
            what = f"the file as it is, {len(tensors)} tensors"
        report = {"file": str(path), "base": str(base) if base else None, "bytes": len(data),
                  "measured": what, "runs": args.runs, "budget_s": args.budget,
                  "threads": args.threads, "versions": versions, "rows": []}
        for label, dtype, bytes_, count in subsets(data, tensors):
            rows = []
            for key, tool, setting, make in TOOLS:
                if key in chosen:
                    print(f"peers: {path.name}: {label}: {tool} {setting}", file=sys.stderr)
                    rows.append((tool, setting, measure(make, dtype, bytes_, args)))
            if "lmc" in chosen:
                print(f"peers: {path.name}: {label}: lmc", file=sys.stderr)
                whole = count is None
                rows.append(("lmc", "lmc bench --methods lmc",
                             lmc_row(args.lmc, path, base, bytes_, dtype, whole, args)))
            for tool, setting, r in rows:
                failed |= r["status"] != "ok"
                report["rows"].append({"data": label, "dtype": dtype, "bytes": len(bytes_),
                                       "tensors": count, "tool": tool, "setting": setting, **r})
        reports.append(report)
        print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1) + "\n")
    return 1 if failed else 0


def markdown(r):
    v = r["versions"]
    lines = [
        f"{r['file']}: {r['bytes']} bytes, {r['measured']}. Median of up to {r['runs']} runs, "
        f"fewer once a tool's runs took {r['budget_s']:g} s (runs: compress/decompress); "
        f"{r['threads']} thread(s) for ZipNN, blosc2 and lmc, one for OpenZL. "
        f"zipnn {v['zipnn']}, openzl {v['openzl']}, blosc2 {v['blosc2']}, numpy {v['numpy']}.",
        "",
        "| data | tool | setting | ratio | compress MB/s | decompress MB/s | runs | round trip |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        data = x["data"] if x["tensors"] is None else f"{x['data']} ({x['tensors']}, {x['bytes']} B)"
        if "ratio" in x:
            runs = (str(x["runs"]) if x["runs"] == x["decompress_runs"]
                    else f"{x['runs']}/{x['decompress_runs']}")
            status = "; ".join([x["status"]] + x["notes"])
            lines.append(f"| {data} | {x['tool']} | {x['setting']} | {x['ratio']:.3f} | "
                         f"{x['compress_mb_per_s']:.0f} | {x['decompress_mb_per_s']:.0f} | "
                         f"{runs} | {status} |")
        else:
            lines.append(f"| {data} | {x['tool']} | {x['setting']} | | | | | {x['status']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
