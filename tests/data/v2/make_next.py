#!/usr/bin/env python3
"""Writes next.safetensors: the "next snapshot" of ../v1/small.safetensors,
the input of the v2 (delta) golden container.

Python 3.11, standard library only, deterministic. From small.safetensors:
every tensor keeps its name, dtype and shape except that `ints.i8` is dropped
(a removed tensor) and a new tensor `new.bias` (F32, 5 elements) is added;
`__metadata__` gains a longer step string (the header changes length); in
every kept tensor about one element in 8 gets its lowest byte changed.

This script documents how next.safetensors was made. The file itself is a
golden file and is never regenerated (see README.md).

    python3 tests/data/v2/make_next.py [OUT]
"""

import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDTH = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "next.safetensors"
    src = (HERE.parent / "v1" / "small.safetensors").read_bytes()
    n = struct.unpack("<Q", src[:8])[0]
    header = json.loads(src[8:8 + n])
    data = src[8 + n:]
    meta = header.pop("__metadata__", {})
    meta["step"] = "1000000"
    state = 12345
    tensors = []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if name == "ints.i8":
            continue
        a, b = info["data_offsets"]
        t = bytearray(data[a:b])
        w = WIDTH[info["dtype"]]
        for i in range(0, len(t), w):
            state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            if (state >> 61) == 0:  # one element in 8
                t[i] ^= (state >> 32) & 0xFF or 1
        tensors.append((name, info["dtype"], info["shape"], bytes(t)))
    tensors.append(("new.bias", "F32", [5], struct.pack("<5f", 0.5, -0.25, 1.0, 0.0, -2.0)))
    head = {"__metadata__": meta}
    off = 0
    for name, dtype, shape, t in tensors:
        head[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(t)]}
        off += len(t)
    text = json.dumps(head, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    body = b"".join(t for *_, t in tensors)
    out.write_bytes(struct.pack("<Q", len(text)) + text.encode() + body)


if __name__ == "__main__":
    main()
