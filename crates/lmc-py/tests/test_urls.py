"""lmc's Python functions on URLs: save_file, load_file, load_metadata,
compress_file, decompress_file and verify on s3:// (moto_server, which
.ci/run starts and names in LMC_TEST_S3_ENDPOINT) and file://, through the
same layer as the CLI (crates/lmc-remote). Every round trip is compared
byte for byte, and with what the same call writes to a local file."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import lmc
from conftest import s3_bucket


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    raw = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))


def state(big: bool = False) -> dict:
    """A small state dict, or one whose container spans several 8 MiB
    upload parts (the first, with the header, goes up last)."""
    g = torch.Generator().manual_seed(5)
    n = 3_000_000 if big else 20_000
    w = torch.randn(n, generator=g)
    return {
        "w": w,
        "w_bf16": w.to(torch.bfloat16),
        "m": torch.randn(n // 7, generator=g) * 1e-3,
        "ids": torch.arange(1000, dtype=torch.int64),
        "step": torch.tensor(12),
    }


class S3:
    """A bucket on the test server, with plain (unsigned: moto takes them)
    requests to look at what lmc wrote."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint = endpoint
        self.bucket = bucket

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str) -> bytes | None:
        try:
            return urllib.request.urlopen(f"{self.endpoint}/{self.bucket}/{key}", timeout=60).read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def put(self, key: str, data: bytes) -> None:
        req = urllib.request.Request(
            f"{self.endpoint}/{self.bucket}/{key}",
            data=data,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(req, timeout=60).read()


@pytest.fixture
def s3(monkeypatch, request) -> S3:
    endpoint = os.environ.get("LMC_TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.skip("*** LMC_TEST_S3_ENDPOINT is not set: no S3 server (see README, 'Object storage') ***")
    bucket = s3_bucket(monkeypatch, endpoint, f"lmc-urls-{os.getpid()}-{abs(hash(request.node.name)) % 10**8}")
    return S3(endpoint, bucket)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("big", [False, True], ids=["one-part", "several-parts"])
def test_save_and_load_on_s3(tmp_path, s3, big):
    s = state(big)
    local = tmp_path / "m.lmc"
    meta = {"step": "12"}
    want = lmc.save_file(s, local, metadata=meta)
    got = lmc.save_file(s, s3.url("m.lmc"), metadata=meta)
    assert got == want
    # The object is the file, byte for byte.
    assert sha(s3.get("m.lmc")) == sha(local.read_bytes())
    back = lmc.load_file(s3.url("m.lmc"))
    assert list(back) == list(s)
    for k in s:
        assert same(back[k], s[k]), k
    arrays = lmc.load_file(s3.url("m.lmc"), framework="numpy")
    assert arrays["ids"].tobytes() == s["ids"].numpy().tobytes()
    assert lmc.load_metadata(s3.url("m.lmc")) == {"format": "pt", "step": "12"}
    v = lmc.verify(s3.url("m.lmc"))
    assert v == lmc.verify(local)
    assert v["compressed_len"] == local.stat().st_size


def test_compress_decompress_files_on_s3(tmp_path, s3, run_lmc):
    s = state(big=True)
    st = tmp_path / "model.safetensors"
    lmc.save_file(s, tmp_path / "x.lmc")
    lmc.decompress_file(tmp_path / "x.lmc", st)
    original = st.read_bytes()
    lmc.compress_file(st, tmp_path / "model.safetensors.lmc")
    local_lmc = (tmp_path / "model.safetensors.lmc").read_bytes()

    # Local -> URL: the same bytes as a local compress (and as the CLI's).
    summary = lmc.compress_file(st, s3.url("a/model.safetensors.lmc"))
    assert summary["compressed_len"] == len(local_lmc)
    assert sha(s3.get("a/model.safetensors.lmc")) == sha(local_lmc)
    run_lmc("compress", st, "-o", tmp_path / "cli.lmc", "-q")
    assert sha((tmp_path / "cli.lmc").read_bytes()) == sha(local_lmc)

    # URL -> local, read in ranges as it is decoded; default name too.
    n = lmc.decompress_file(s3.url("a/model.safetensors.lmc"), tmp_path / "back.safetensors")
    assert n == len(original)
    assert sha((tmp_path / "back.safetensors").read_bytes()) == sha(original)

    # URL -> URL both ways: decoded bytes uploaded as they come.
    lmc.decompress_file(s3.url("a/model.safetensors.lmc"))
    assert sha(s3.get("a/model.safetensors")) == sha(original)
    lmc.compress_file(s3.url("a/model.safetensors"), s3.url("b/again.lmc"))
    assert sha(s3.get("b/again.lmc")) == sha(local_lmc)
    # The CLI reads what Python uploaded.
    run_lmc("decompress", s3.url("b/again.lmc"), "-o", tmp_path / "cli.safetensors", "-q")
    assert sha((tmp_path / "cli.safetensors").read_bytes()) == sha(original)


def test_deltas_and_directories_on_s3(tmp_path, s3):
    s = state()
    a = tmp_path / "step-1.safetensors"
    b = tmp_path / "step-2.safetensors"
    lmc.save_file(s, tmp_path / "1.lmc")
    lmc.decompress_file(tmp_path / "1.lmc", a)
    s2 = {k: (v + 1 if v.is_floating_point() else v) for k, v in s.items()}
    lmc.save_file(s2, tmp_path / "2.lmc")
    lmc.decompress_file(tmp_path / "2.lmc", b)
    # The base on S3 too, as a full .lmc of it.
    lmc.compress_file(a, s3.url("step-1.lmc"))
    lmc.compress_file(b, s3.url("step-2.lmc"), base=s3.url("step-1.lmc"))
    with pytest.raises(lmc.LmcError, match="delta container"):
        lmc.load_file(s3.url("step-2.lmc"))
    back = lmc.load_file(s3.url("step-2.lmc"), base=a)
    for k in s2:
        assert same(back[k], s2[k]), k
    assert lmc.verify(s3.url("step-2.lmc"), base=s3.url("step-1.lmc"))["delta"] is True
    lmc.decompress_file(s3.url("step-2.lmc"), tmp_path / "b2", base=s3.url("step-1.lmc"))
    assert (tmp_path / "b2").read_bytes() == b.read_bytes()

    # A directory's container: to a URL and back into a directory.
    d = tmp_path / "ckpt"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "model.safetensors").write_bytes(a.read_bytes())
    (d / "config.json").write_text('{"a": 1}')
    lmc.compress_file(d, s3.url("ckpt.lmc"))
    lmc.decompress_file(s3.url("ckpt.lmc"), tmp_path / "restored")
    assert (tmp_path / "restored" / "sub" / "model.safetensors").read_bytes() == a.read_bytes()
    assert (tmp_path / "restored" / "config.json").read_text() == '{"a": 1}'
    with pytest.raises(lmc.LmcError, match="cannot go to a URL"):
        lmc.decompress_file(s3.url("ckpt.lmc"), s3.url("restored"))


def test_errors_name_the_url_and_leave_no_object(tmp_path, s3):
    missing = s3.url("nope.lmc")
    for call in (
        lambda: lmc.load_file(missing),
        lambda: lmc.verify(missing),
        lambda: lmc.load_metadata(missing),
        lambda: lmc.decompress_file(missing, tmp_path / "x"),
        lambda: lmc.compress_file(s3.url("nope.safetensors"), tmp_path / "y.lmc"),
    ):
        with pytest.raises(lmc.LmcError, match=missing.replace(".lmc", "") ):
            call()
    assert not (tmp_path / "x").exists() and not (tmp_path / "y.lmc").exists()
    with pytest.raises(lmc.LmcError, match="read only"):
        lmc.save_file(state(), "http://127.0.0.1:9/m.lmc")
    with pytest.raises(lmc.LmcError, match="unknown scheme"):
        lmc.load_file("ftp://host/m.lmc")
    # Not a container: named by its URL.
    s3.put("junk.lmc", b"not a container at all" * 10)
    with pytest.raises(lmc.LmcError, match=s3.url("junk.lmc")):
        lmc.load_file(s3.url("junk.lmc"))

    # A damaged container decoded to a URL: refused, and nothing appears
    # under the destination's key (the upload is aborted).
    s = state(big=True)
    lmc.save_file(s, tmp_path / "m.lmc")
    data = bytearray((tmp_path / "m.lmc").read_bytes())
    data[len(data) // 2] ^= 0x40
    s3.put("bad.lmc", bytes(data))
    with pytest.raises(lmc.LmcError, match="checksum|hash"):
        lmc.decompress_file(s3.url("bad.lmc"), s3.url("bad.safetensors"))
    assert s3.get("bad.safetensors") is None
    with pytest.raises(lmc.LmcError, match="checksum|hash"):
        lmc.verify(s3.url("bad.lmc"))
    # A save that fails midway (an unsupported dtype comes first here, so
    # nothing is sent) leaves no object either.
    with pytest.raises((lmc.LmcError, TypeError, ValueError)):
        lmc.save_file({"c": torch.zeros(4, dtype=torch.complex64)}, s3.url("c.lmc"))
    assert s3.get("c.lmc") is None


def test_file_urls(tmp_path):
    s = state()
    url = (tmp_path / "m.lmc").as_uri()
    lmc.save_file(s, url)
    assert (tmp_path / "m.lmc").is_file()
    back = lmc.load_file(url)
    for k in s:
        assert same(back[k], s[k]), k
    lmc.decompress_file(url, (tmp_path / "m.safetensors").as_uri())
    lmc.compress_file((tmp_path / "m.safetensors").as_uri(), tmp_path / "again.lmc")
    assert (tmp_path / "again.lmc").read_bytes() == (tmp_path / "m.lmc").read_bytes()
    assert lmc.verify(url)["tensors"] == len(s)
