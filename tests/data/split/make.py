#!/usr/bin/env python3
"""Writes base.safetensors and next.safetensors: two snapshots of one BF16
tensor (16,384 elements), the input of the split-plane golden container.

Python 3.11, standard library only, deterministic. In next, about 82% of the
elements change in their two lowest mantissa bits, 8% change binade (the
lowest exponent bit flips) with a new random mantissa, the rest are
unchanged: the XOR delta's low plane is small where the exponent did not
change and random where it did, which is what split planes code.

This script documents how the files were made. They are golden files and
are never regenerated (see README.md).

    python3 tests/data/split/make.py [OUT_DIR]
"""

import json
import struct
import sys
from pathlib import Path

N = 16384


def lcg(state):
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        yield state >> 33


def safetensors(values):
    head = {"w": {"dtype": "BF16", "shape": [N], "data_offsets": [0, 2 * N]}}
    text = json.dumps(head, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + struct.pack(f"<{N}H", *values)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    r = lcg(2026)
    base = [0x3C00 | (next(r) & 0x03FF) | ((next(r) & 1) << 15) for _ in range(N)]
    new = []
    for v in base:
        k = next(r) % 100
        if k < 8:
            v = (v ^ 0x0100) & 0xFF00 | next(r) & 0xFF
        elif k < 90:
            v ^= next(r) % 4
        new.append(v)
    (out / "base.safetensors").write_bytes(safetensors(base))
    (out / "next.safetensors").write_bytes(safetensors(new))


if __name__ == "__main__":
    main()
