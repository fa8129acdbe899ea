"""lmc.safe_open: tensors and rows of them read one at a time, bit for bit,
decoding only the chunks asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmc
from conftest import s3_bucket
from lmc import _lmc


def state() -> dict:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(300, 64, generator=g)
    return {
        "embed": w,
        "embed_bf16": w.to(torch.bfloat16),
        "bias": torch.randn(64, generator=g),
        "ids": torch.arange(1000, dtype=torch.int64).reshape(10, 100),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaN payloads and -0.0 included)."""
    raw = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))


def test_keys_metadata_tensors_and_slices(tmp_path):
    s = state()
    path = tmp_path / "m.lmc"
    lmc.save_file(s, path, metadata={"step": "7"}, chunk_size=4096)
    with lmc.safe_open(path, framework="pt") as f:
        assert f.keys() == list(s)
        assert f.metadata()["step"] == "7"
        for name, t in s.items():
            assert same(f.get_tensor(name), t), name
        sl = f.get_slice("embed")
        assert sl.get_shape() == [300, 64] and sl.get_dtype() == "F32"
        w, b = s["embed"], s["embed_bf16"]
        for index in [
            slice(None),
            slice(0, 1),
            slice(17, 253),
            slice(-40, None),
            slice(250, 10),  # empty
            5,
            -1,
            (slice(3, 9), slice(10, 20)),
            (7, slice(None, None, 3)),
            slice(0, 300, 7),  # a step: decoded whole, then indexed
            (Ellipsis, 3),
        ]:
            assert torch.equal(sl[index], w[index]), index
            assert same(f.get_slice("embed_bf16")[index], b[index]), index
        assert torch.equal(f.get_slice("ids")[2:4, 5:], s["ids"][2:4, 5:])
        assert torch.equal(f.get_slice("scalar")[()], s["scalar"])
        with pytest.raises(IndexError):
            sl[300]
        with pytest.raises(lmc.LmcError, match="no tensor 'nope'"):
            f.get_tensor("nope")
    with pytest.raises(lmc.LmcError, match="closed"):
        f.get_tensor("bias")

    with lmc.safe_open(path, framework="np") as f:
        arr = f.get_slice("embed")[10:20]
        assert isinstance(arr, np.ndarray)
        assert np.array_equal(arr, s["embed"][10:20].numpy())

    with pytest.raises(ValueError):
        lmc.safe_open(path, framework="tf")
    with pytest.raises(ValueError):
        lmc.safe_open(path, device="cuda")


def test_a_slice_decodes_only_its_chunks(tmp_path):
    """With 4 KiB chunks, rows 0-15 of a [256, 64] float32 tensor are its
    first chunk: damage in a later chunk leaves them readable, and the
    whole tensor is then refused naming the damaged chunk."""
    w = torch.arange(256 * 64, dtype=torch.float32).reshape(256, 64)
    path = tmp_path / "w.lmc"
    lmc.save_file({"w": w}, path, chunk_size=4096)
    data = bytearray(path.read_bytes())
    # The last chunk's bytes sit just before the index: change one there.
    header_payload = 64 + int.from_bytes(data[40:48], "little")
    data[header_payload - 5] ^= 0x20
    path.write_bytes(bytes(data))
    with lmc.safe_open(path) as f:
        assert torch.equal(f.get_slice("w")[0:16], w[0:16])
        assert torch.equal(f.get_slice("w")[100:120], w[100:120])
        with pytest.raises(lmc.LmcError, match=r"chunk \d+ .*checksum"):
            f.get_tensor("w")
        with pytest.raises(lmc.LmcError, match="checksum"):
            f.get_slice("w")[250:]


def test_delta_containers_are_refused_with_advice(tmp_path):
    a = {"w": torch.randn(64, 64)}
    b = {"w": a["w"] + 1}
    lmc.save_file(a, tmp_path / "a.lmc")
    lmc.save_file(b, tmp_path / "b.lmc")
    lmc.decompress_file(tmp_path / "a.lmc", tmp_path / "a.safetensors")
    lmc.decompress_file(tmp_path / "b.lmc", tmp_path / "b.safetensors")
    lmc.compress_file(tmp_path / "b.safetensors", tmp_path / "d.lmc", base=tmp_path / "a.safetensors")
    with pytest.raises(lmc.LmcError, match=r"delta container.*base="):
        lmc.safe_open(tmp_path / "d.lmc")
    # Bytes past a tensor's end are refused before anything is allocated.
    r = _lmc.Reader(str(tmp_path / "a.lmc"))
    with pytest.raises(lmc.LmcError, match="asked for"):
        r.read("w", 0, 1 << 62)


def test_reads_come_from_the_file_when_asked(tmp_path):
    """Opening reads the header and index only: a chunk damaged on disk
    after the file was opened is found by the read that needs it (named in
    the error), while reads of other tensors never touch it."""
    s = state()
    path = tmp_path / "m.lmc"
    lmc.save_file({"bias": s["bias"], "ids": s["ids"], "embed": s["embed"]}, path, chunk_size=4096)
    with lmc.safe_open(path, framework="pt") as f:
        chunks = lmc.verify(path)["chunks"]
        assert chunks > 4
        data = bytearray(path.read_bytes())
        # The last tensor's chunks end just before the index: damage one
        # byte well inside the payload's last quarter.
        data[int(len(data) * 0.7)] ^= 0x10
        path.write_bytes(bytes(data))
        assert same(f.get_tensor("bias"), s["bias"])
        assert same(f.get_tensor("ids"), s["ids"])
        with pytest.raises(lmc.LmcError, match="checksum"):
            f.get_tensor("embed")


def test_safe_open_reads_a_url_in_ranges(tmp_path, monkeypatch):
    """safe_open on s3:// (moto_server, which .ci/run starts and names in
    LMC_TEST_S3_ENDPOINT): the index when opened, then the chunks each read
    needs, through the same layer as the CLI (crates/lmc-remote)."""
    import os
    import urllib.request

    endpoint = os.environ.get("LMC_TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.skip("*** LMC_TEST_S3_ENDPOINT is not set: no S3 server (see README, 'Object storage') ***")
    s = state()
    path = tmp_path / "m.lmc"
    lmc.save_file(s, path, metadata={"step": "7"}, chunk_size=4096)
    bucket = s3_bucket(monkeypatch, endpoint, f"lmc-py-{os.getpid()}")
    # Typed: urllib would call the body a form, which the server parses.
    put = urllib.request.Request(
        f"{endpoint}/{bucket}/m.lmc",
        data=path.read_bytes(),
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    urllib.request.urlopen(put, timeout=30).read()
    url = f"s3://{bucket}/m.lmc"
    with lmc.safe_open(url, framework="pt") as f:
        assert f.keys() == list(s)
        assert f.metadata()["step"] == "7"
        for name, t in s.items():
            assert same(f.get_tensor(name), t), name
        assert torch.equal(f.get_slice("embed")[17:253], s["embed"][17:253])
    with pytest.raises(lmc.LmcError, match=f"s3://{bucket}/nope.lmc"):
        lmc.safe_open(f"s3://{bucket}/nope.lmc")
