#!/usr/bin/env python3
"""Rewrites one step of a series made by scripts/gen-series.sh into the
layout of a ZeRO / distributed-optimizer checkpoint, as DeepSpeed and
Megatron-LM save theirs: the model's BF16 weights in one file, and the fp32
master weights and the AdamW state as flat buffers (every parameter's
elements back to back, in model order, padded), cut into equal partitions,
one file per data-parallel rank.

Usage: scripts/flat-layout.py SERIES_DIR STEP OUT_DIR [--ranks N]
  e.g. scripts/flat-layout.py target/series/pretrain 300 target/flat/pretrain-300

Writes, as safetensors (lmc reads them; DeepSpeed and Megatron write the
same buffers into torch.save pickles):

  OUT_DIR/mp_rank_00_model_states.safetensors   the BF16 weights, unchanged
  OUT_DIR/zero_pp_rank_R_mp_rank_00_optim_states.safetensors, R = 0..N-1:
      fp32_flat_partition   F32, this rank's slice of the flat masters
      exp_avg, exp_avg_sq   F32, the same slices of the AdamW moments

As in DeepSpeed ZeRO stages 1 and 2, each parameter starts at a multiple of
ALIGN elements of the flat buffer (the gap is zeros), the buffer is padded
to a multiple of N * ALIGN, and rank R holds its R-th equal part; so a
parameter may straddle two ranks' partitions. Parameters are taken in the
order of the master file (name order); frozen tensors, which have no
optimizer state (MiniLM's pooler and position ids), are only in the model
file.

Python 3, standard library only. Deterministic.
"""

import argparse
import json
import struct
from pathlib import Path

ALIGN = 32  # elements; DeepSpeed aligns partitions to 2 * world_size elements or more


def read_safetensors(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    head.pop("__metadata__", None)
    body = memoryview(data)[8 + n:]
    out = {}
    for name, t in head.items():
        a, b = t["data_offsets"]
        out[name] = (t["dtype"], t["shape"], body[a:b])
    return out


def write_safetensors(path, tensors, metadata):
    head, parts, off = {"__metadata__": metadata}, [], 0
    for name, dtype, shape, raw in tensors:
        head[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        parts.append(raw)
        off += len(raw)
    text = json.dumps(head, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text.encode())
        for p in parts:
            f.write(p)
    tmp.rename(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("series")
    ap.add_argument("step", type=int)
    ap.add_argument("out")
    ap.add_argument("--ranks", type=int, default=2)
    args = ap.parse_args()
    series, name = Path(args.series), f"step-{args.step:06d}.safetensors"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    weights = (series / "weights-bf16" / name).read_bytes()
    (out / "mp_rank_00_model_states.safetensors").write_bytes(weights)

    master = read_safetensors(series / "master-fp32" / name)
    optim = read_safetensors(series / "optim" / name)
    flat = {"fp32_flat_partition": bytearray(), "exp_avg": bytearray(), "exp_avg_sq": bytearray()}
    for pname, (dtype, shape, raw) in master.items():
        if pname + ".exp_avg" not in optim:
            continue  # frozen: no optimizer state, not in the flat buffers
        assert dtype == "F32", pname
        sources = {
            "fp32_flat_partition": raw,
            "exp_avg": optim[pname + ".exp_avg"][2],
            "exp_avg_sq": optim[pname + ".exp_avg_sq"][2],
        }
        for key, buf in flat.items():
            buf += b"\0" * (-len(buf) % (4 * ALIGN))
            buf += sources[key]
    unit = 4 * ALIGN * args.ranks
    for buf in flat.values():
        buf += b"\0" * (-len(buf) % unit)
    part = len(flat["exp_avg"]) // args.ranks
    for r in range(args.ranks):
        tensors = [
            (key, "F32", [part // 4], bytes(buf[r * part:(r + 1) * part])) for key, buf in flat.items()
        ]
        meta = {"layout": "zero-flat", "rank": str(r), "ranks": str(args.ranks), "step": str(args.step)}
        write_safetensors(out / f"zero_pp_rank_{r}_mp_rank_00_optim_states.safetensors", tensors, meta)


if __name__ == "__main__":
    main()
