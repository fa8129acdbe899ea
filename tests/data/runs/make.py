#!/usr/bin/env python3
"""Writes base.safetensors and next.safetensors: two snapshots of one BF16
tensor (65,536 elements), the input of the runs-plane golden container.

Python 3.11, standard library only, deterministic. In next, like a
fine-tuning step, about 75% of the elements are unchanged, 10% change in
their two lowest mantissa bits and 15% change binade (the lowest exponent
bit flips) with a new random mantissa: the XOR delta's exponent plane is
mostly zeros, and its low plane is mostly zeros where the exponent did
not change, which is what runs planes code (in a split plane's part too).

This script documents how the files were made. They are golden files and
are never regenerated (see README.md).

    python3 tests/data/runs/make.py [OUT_DIR]
"""

import json
import struct
import sys
from pathlib import Path

N = 65536


def lcg(state):
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        yield state >> 33


def safetensors(values):
    head = {"w": {"dtype": "BF16", "shape": [256, 256], "data_offsets": [0, 2 * N]}}
    text = json.dumps(head, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + struct.pack(f"<{N}H", *values)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    r = lcg(2027)
    base = [0x3C00 | (next(r) & 0x03FF) | ((next(r) & 1) << 15) for _ in range(N)]
    new = []
    for v in base:
        k = next(r) % 100
        if k < 15:
            v = (v ^ 0x0080) & 0xFF80 | next(r) & 0x7F
        elif k < 25:
            v ^= 1 + next(r) % 3
        new.append(v)
    (out / "base.safetensors").write_bytes(safetensors(base))
    (out / "next.safetensors").write_bytes(safetensors(new))


if __name__ == "__main__":
    main()
