#!/usr/bin/env python3
"""Writes mixed/: a small mixed-precision checkpoint directory, the input of
the derived-tensor golden container (FORMAT.md, "Derived tensors").

Python 3.11, standard library only, deterministic. Three files:

- weights-bf16.safetensors: BF16 `a` [64, 32] and `s` [1500] and F16 `h`
  [700], roundings of the masters (`s` by stochastic rounding: about half
  its elements one step up); `b` [1200] and `c` [900], roundings of slices
  of the flat buffer; `head`, a copy of `a` (tied); `y` [600], whose
  master straddles two partitions.
- master-fp32.safetensors: F32 `a` and `s` (found by name), `flat` [2810]:
  3 elements of padding, `c`'s master, `b`'s master, then `h`'s master and
  7 of padding (found by content); `part0` [400] and `part1` [310], two
  partitions of a flat buffer: 100 other elements and the first 300 of
  `y`'s master, then its last 300 and 10 of padding.
- optim.safetensors: F32 `a.exp_avg` and a copy of `a.exp_avg` named
  `a.exp_avg_copy` (a duplicate).

This script documents how the files were made. They are golden files and
are never regenerated (see README.md).

    python3 tests/data/derived/make.py [OUT_DIR]
"""

import json
import struct
import sys
from pathlib import Path


def lcg(state):
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        yield state >> 33


R = lcg(17)


def f32_values(n):
    # Uniform in [-0.05, 0.05), made exact F32 values.
    vals = [((next(R) / 2**31) - 0.5) * 0.1 for _ in range(n)]
    return list(struct.unpack(f"<{n}f", struct.pack(f"<{n}f", *vals)))


def bits32(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def bf16(v):
    # Round to nearest even (no NaNs here).
    x = bits32(v)
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16) & 0xFFFF


def f16(v):
    # struct's 'e' rounds to nearest even.
    return struct.unpack("<H", struct.pack("<e", v))[0]


def safetensors(tensors):
    head, data = {}, b""
    for name, dtype, shape, raw in tensors:
        head[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(head, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + data


def pack(fmt, vals):
    return struct.pack(f"<{len(vals)}{fmt}", *vals)


def main() -> None:
    out = (Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent) / "mixed"
    out.mkdir(parents=True, exist_ok=True)
    a, s, b, c, h = f32_values(64 * 32), f32_values(1500), f32_values(1200), f32_values(900), f32_values(700)
    flat = [0.0] * 3 + c + b + h + [0.0] * 7
    exp_avg = f32_values(64 * 32)
    y, other = f32_values(600), f32_values(100)
    a16 = pack("H", [bf16(v) for v in a])
    s16 = pack("H", [(bf16(v) + (next(R) & 1)) & 0xFFFF for v in s])
    (out / "weights-bf16.safetensors").write_bytes(safetensors([
        ("a", "BF16", [64, 32], a16),
        ("b", "BF16", [1200], pack("H", [bf16(v) for v in b])),
        ("c", "BF16", [30, 30], pack("H", [bf16(v) for v in c])),
        ("h", "F16", [700], pack("H", [f16(v) for v in h])),
        ("head", "BF16", [64, 32], a16),
        ("s", "BF16", [1500], s16),
        ("y", "BF16", [600], pack("H", [bf16(v) for v in y])),
    ]))
    (out / "master-fp32.safetensors").write_bytes(safetensors([
        ("a", "F32", [64, 32], pack("f", a)),
        ("flat", "F32", [len(flat)], pack("f", flat)),
        ("part0", "F32", [400], pack("f", other + y[:300])),
        ("part1", "F32", [310], pack("f", y[300:] + [0.0] * 10)),
        ("s", "F32", [1500], pack("f", s)),
    ]))
    (out / "optim.safetensors").write_bytes(safetensors([
        ("a.exp_avg", "F32", [64, 32], pack("f", exp_avg)),
        ("a.exp_avg_copy", "F32", [64, 32], pack("f", exp_avg)),
    ]))


if __name__ == "__main__":
    main()
