#!/usr/bin/env python3
"""Writes small.safetensors, the input of the v1 golden container.

Python 3.11, standard library only. The output is fully deterministic: every
value comes from a fixed 64-bit LCG and integer/IEEE arithmetic (no libm
calls whose last bit could differ between platforms).

This script documents how small.safetensors was made. The file itself is a
golden file and is never regenerated (see README.md).

    python3 tests/data/v1/make_small.py [OUT]
"""

import json
import math
import struct
import sys
from pathlib import Path


class Lcg:
    """Knuth's MMIX LCG; outputs the top 32 bits of the state."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def u32(self) -> int:
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return self.state >> 32

    def uniform(self) -> float:
        """In [0, 1), exact multiple of 2^-32."""
        return self.u32() / 4294967296.0

    def normal(self, std: float) -> float:
        """Irwin-Hall approximation of N(0, 1): sum of 12 uniforms minus 6."""
        s = 0.0
        for _ in range(12):
            s += self.uniform()
        return (s - 6.0) * std


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bf16_bits(x: float) -> int:
    """Round-to-nearest-even from f32 (the values here are finite)."""
    b = f32_bits(x)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


def f16_bits(x: float) -> int:
    return struct.unpack("<H", struct.pack("<e", x))[0]


def e5m2_byte(x: float) -> int:
    """Top byte of the f16 encoding (truncation)."""
    return f16_bits(x) >> 8


def e4m3_byte(x: float) -> int:
    """OCP FP8 E4M3 (bias 7, max 448, no infinities), mantissa truncated."""
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0
    a = min(abs(x), 448.0)
    if a < 2.0**-9:
        return sign
    m, e = math.frexp(a)  # a = m * 2^e, 0.5 <= m < 1 (exact)
    exp = e - 1 + 7  # biased exponent of 1.mmm * 2^(e-1)
    if exp <= 0:  # subnormal: 0.mmm * 2^-6
        mant = int(a / 2.0**-9)
        return sign | (mant & 0x7)
    mant = int((m * 2.0 - 1.0) * 8.0)
    return sign | (exp << 3) | mant


def pack(fmt: str, values) -> bytes:
    return b"".join(struct.pack("<" + fmt, v) for v in values)


def build() -> bytes:
    rng = Lcg(0x4C4D43_5631)  # "LMCV1"
    tensors: list[tuple[str, str, list[int], bytes]] = []

    def add(name: str, dtype: str, shape: list[int], data: bytes) -> None:
        tensors.append((name, dtype, shape, data))

    def count(shape: list[int]) -> int:
        n = 1
        for d in shape:
            n *= d
        return n

    # Weights: normal-ish, so the exponent planes compress.
    shape = [37, 61]
    add("model.embed_tokens.weight", "BF16", shape,
        pack("H", (bf16_bits(rng.normal(0.02)) for _ in range(count(shape)))))
    shape = [33, 65]
    add("model.layers.0.self_attn.q_proj.weight", "F16", shape,
        pack("H", (f16_bits(rng.normal(0.05)) for _ in range(count(shape)))))
    shape = [29, 71]
    add("model.layers.0.mlp.up_proj.weight", "F32", shape,
        pack("I", (f32_bits(rng.normal(0.03)) for _ in range(count(shape)))))
    add("model.layers.0.mlp.empty_bias", "F32", [0, 16], b"")
    shape = [3, 7, 11]
    add("model.layers.0.input_layernorm.weight", "F64", shape,
        pack("d", (1.0 + rng.normal(0.01) for _ in range(count(shape)))))
    shape = [5001]
    add("model.layers.1.fp8_e4m3.weight", "F8_E4M3", shape,
        bytes(e4m3_byte(rng.normal(0.5)) for _ in range(count(shape))))
    shape = [3, 333]
    add("model.layers.1.fp8_e5m2.weight", "F8_E5M2", shape,
        bytes(e5m2_byte(rng.normal(0.5)) for _ in range(count(shape))))
    add("model.layers.1.empty.weight", "BF16", [4, 0], b"")

    # Integers of every width, odd element counts, small magnitudes.
    add("ints.i8", "I8", [257], pack("b", (int(rng.normal(20.0)) for _ in range(257))))
    add("ints.i16", "I16", [129], pack("h", (int(rng.normal(900.0)) for _ in range(129))))
    add("ints.i32", "I32", [5, 13], pack("i", (int(rng.normal(1e5)) for _ in range(65))))
    add("ints.i64", "I64", [7, 3], pack("q", (int(rng.normal(1e9)) for _ in range(21))))
    add("ints.u8", "U8", [1023], bytes(rng.u32() % 200 for _ in range(1023)))
    add("ints.u16", "U16", [17], pack("H", (rng.u32() % 50000 for _ in range(17))))
    add("ints.u32", "U32", [31], pack("I", (rng.u32() for _ in range(31))))
    add("ints.u64", "U64", [9], pack("Q", ((rng.u32() << 20) | rng.u32() for _ in range(9))))
    add("mask", "BOOL", [3, 11], bytes(rng.u32() & 1 for _ in range(33)))

    # 0-rank tensors.
    add("step", "I64", [], pack("q", [123456789]))
    add("loss_scale", "F32", [], pack("f", [65536.0]))

    # Special values: NaNs with payloads (quiet, signalling, negative), signed
    # zeros, infinities, denormals, extremes.
    add("special.f32", "F32", [13], pack("I", [
        0x7FC01234, 0x7F800001, 0xFFC00000, 0x80000000, 0x00000000,
        0x7F800000, 0xFF800000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF,
        0x00800000, 0x3F800000, 0xBF800000,
    ]))
    add("special.bf16", "BF16", [11], pack("H", [
        0x7FC1, 0xFF81, 0x8000, 0x0000, 0x7F80, 0xFF80, 0x0001, 0x807F,
        0x7F7F, 0x3F80, 0xBF80,
    ]))
    add("special.f16", "F16", [11], pack("H", [
        0x7E01, 0xFC01, 0x8000, 0x0000, 0x7C00, 0xFC00, 0x0001, 0x83FF,
        0x7BFF, 0x3C00, 0xBC00,
    ]))
    add("special.f64", "F64", [9], pack("Q", [
        0x7FF8000000000ABC, 0x7FF0000000000001, 0xFFF8000000000000,
        0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
        0x0000000000000001, 0x800FFFFFFFFFFFFF, 0x7FEFFFFFFFFFFFFF,
    ]))
    add("special.fp8", "F8_E4M3", [7], bytes([0x7F, 0xFF, 0x80, 0x00, 0x01, 0x7E, 0xFE]))

    # Header: __metadata__ first, then tensors sorted by name, so the JSON key
    # order differs from the data order.
    header: dict = {"__metadata__": {"format": "pt", "source": "lmc tests/data/v1/make_small.py"}}
    offsets = {}
    pos = 0
    for name, dtype, shape, data in tensors:
        expected = count(shape) * {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
                                   "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                                   "I32": 4, "U32": 4, "F32": 4,
                                   "I64": 8, "U64": 8, "F64": 8}[dtype]
        assert len(data) == expected, (name, len(data), expected)
        offsets[name] = (dtype, shape, pos, pos + len(data))
        pos += len(data)
    for name in sorted(offsets):
        dtype, shape, start, end = offsets[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    out = struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)
    assert len(out) < 64 * 1024, len(out)
    return out


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("small.safetensors")
    data = build()
    out.write_bytes(data)
    print(f"wrote {out}: {len(data)} bytes")


if __name__ == "__main__":
    main()
