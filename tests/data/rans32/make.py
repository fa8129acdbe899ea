#!/usr/bin/env python3
"""Writes base.safetensors and next.safetensors: two snapshots of one BF16
tensor (65,536 elements), the input of the rANS32 golden container.

Python 3.11, standard library only, deterministic. In next, 45% of the
elements keep their sign and exponent (their mantissa changes in its low
bits), 35% move one binade (the lowest exponent bit flips), 15% flip the
two lowest exponent bits and 5% get a random exponent, each with a new
random mantissa: the XOR delta's exponent plane is skewed (about 1.7 bits
a byte, so whole-bit Huffman codes lose) but less than half zeros (so it
is not run coded), which is what rANS32 codes.

This script documents how the files were made. They are golden files and
are never regenerated (see README.md).

    python3 tests/data/rans32/make.py [OUT_DIR]
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
    r = lcg(2028)
    # Exponents 0x78..0x7B (magnitudes around 2^-7..2^-4), random sign and mantissa.
    base = [((next(r) & 1) << 15) | ((0x78 + next(r) % 4) << 7) | (next(r) & 0x7F) for _ in range(N)]
    new = []
    for v in base:
        k = next(r) % 100
        if k < 45:
            v ^= 1 + next(r) % 7
        elif k < 80:
            v = (v ^ 0x0080) & 0xFF80 | next(r) & 0x7F
        elif k < 95:
            v = (v ^ 0x0180) & 0xFF80 | next(r) & 0x7F
        else:
            v = (v & 0x8000) | ((next(r) & 0xFF) << 7) | next(r) & 0x7F
        new.append(v)
    (out / "base.safetensors").write_bytes(safetensors(base))
    (out / "next.safetensors").write_bytes(safetensors(new))


if __name__ == "__main__":
    main()
