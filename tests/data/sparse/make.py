#!/usr/bin/env python3
"""Writes base.safetensors and next.safetensors: two snapshots of a BF16
tensor `w` (65,536 elements) and an F32 tensor `m` (8,192 elements), the
input of the sparse-chunk golden container.

Python 3.11, standard library only, deterministic. In next, like a
fine-tuning step, 88% of `w`'s elements are unchanged, 10% change in their
two lowest mantissa bits and 2% change binade (the lowest exponent bit
flips) with a new random mantissa; 80% of `m`'s elements are unchanged and
the others change in their low 16 bits. Few elements change, so lmc codes
each chunk as a sparse delta: a map of the changed elements and their XOR
values' planes.

This script documents how the files were made. They are golden files and
are never regenerated (see README.md).

    python3 tests/data/sparse/make.py [OUT_DIR]
"""

import json
import struct
import sys
from pathlib import Path

N = 65536
M = 8192


def lcg(state):
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        yield state >> 33


def safetensors(w, m):
    head = {
        "m": {"dtype": "F32", "shape": [128, 64], "data_offsets": [0, 4 * M]},
        "w": {"dtype": "BF16", "shape": [256, 256], "data_offsets": [4 * M, 4 * M + 2 * N]},
    }
    text = json.dumps(head, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    return (struct.pack("<Q", len(text)) + text.encode()
            + struct.pack(f"<{M}I", *m) + struct.pack(f"<{N}H", *w))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    r = lcg(2028)
    w0 = [0x3C00 | (next(r) & 0x03FF) | ((next(r) & 1) << 15) for _ in range(N)]
    w1 = []
    for v in w0:
        k = next(r) % 100
        if k < 2:
            v = (v ^ 0x0080) & 0xFF80 | next(r) & 0x7F
        elif k < 12:
            v ^= 1 + next(r) % 3
        w1.append(v)
    m0 = [0x3F000000 | (next(r) & 0x007FFFFF) for _ in range(M)]
    m1 = [v ^ (1 + next(r) % 0xFFFF) if next(r) % 100 < 20 else v for v in m0]
    (out / "base.safetensors").write_bytes(safetensors(w0, m0))
    (out / "next.safetensors").write_bytes(safetensors(w1, m1))


if __name__ == "__main__":
    main()
