"""save_file / load_file / compress_file / decompress_file / verify, and
their compatibility with the lmc CLI."""

from __future__ import annotations

import json
import os
import struct
import threading
import time

import ml_dtypes
import numpy as np
import pytest
import torch

import lmc
from lmc import _lmc
from conftest import np_same


def numpy_tensors() -> dict:
    rng = np.random.default_rng(7)
    f32 = rng.standard_normal((33, 17)).astype(np.float32)
    special = np.array(
        [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38], dtype=np.float32
    )
    nan_payload = np.array([0x7FC00001, 0xFFC12345, 0x00000001], dtype=np.uint32).view(np.float32)
    return {
        "f32": f32,
        "special": special,
        "nan_payload": nan_payload,
        "f64": rng.standard_normal(11),
        "f16": rng.standard_normal(9).astype(np.float16),
        "bf16": f32.astype(ml_dtypes.bfloat16),
        "f8_e4m3": rng.standard_normal(40).astype(ml_dtypes.float8_e4m3fn),
        "f8_e5m2": rng.standard_normal(40).astype(ml_dtypes.float8_e5m2),
        "bool": rng.standard_normal(13) > 0,
        "u8": np.arange(256, dtype=np.uint8),
        "i8": np.arange(-128, 128, dtype=np.int8),
        "i16": np.arange(-500, 500, 7, dtype=np.int16),
        "u16": np.arange(0, 65535, 999, dtype=np.uint16),
        "i32": np.arange(-(2**31), 2**31 - 1, 2**26, dtype=np.int32),
        "u32": np.array([0, 1, 2**32 - 1], dtype=np.uint32),
        "i64": np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "transposed": f32.T,
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    }


def test_numpy_round_trip_every_dtype(tmp_path):
    tensors = numpy_tensors()
    path = tmp_path / "t.lmc"
    summary = lmc.save_file(tensors, path, {"note": "hello"})
    assert summary["compressed_len"] == path.stat().st_size
    back = lmc.load_file(path)
    assert list(back) == list(tensors)
    for name, a in tensors.items():
        want = np.array(a, order="C").astype(a.dtype.newbyteorder("<"))
        assert np_same(back[name], want), name
    assert back["bf16"].dtype == ml_dtypes.bfloat16
    assert back["scalar"].shape == ()
    assert back["empty"].shape == (0, 4)
    assert lmc.load_metadata(path) == {"format": "np", "note": "hello"}
    # Loaded arrays are writable views of one buffer.
    back["f32"][0, 0] = 1.0


def torch_tensors() -> dict:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(24, 10, generator=g)
    out = {
        "w": w,
        "w_bf16": w.to(torch.bfloat16),
        "w_f16": w.to(torch.float16),
        "w_f64": w.to(torch.float64),
        "f8": w.to(torch.float8_e4m3fn),
        "f8b": w.to(torch.float8_e5m2),
        "step": torch.tensor(12),
        "mask": w > 0,
        "ids": torch.arange(-5, 5, dtype=torch.int64),
        "i8": torch.arange(-5, 5, dtype=torch.int8),
        "u8": torch.arange(0, 250, 3, dtype=torch.uint8),
        "i16": torch.arange(-5, 5, dtype=torch.int16),
        "i32": torch.arange(-5, 5, dtype=torch.int32),
        "col": w[:, 3],  # a non-contiguous view
        "grad": torch.randn(5, requires_grad=True, generator=g),
        "empty": torch.zeros(0, 3, dtype=torch.bfloat16),
    }
    for name in ("uint16", "uint32", "uint64"):
        if hasattr(torch, name):
            out[name] = torch.tensor([0, 1, 7, 300, 65535], dtype=getattr(torch, name))
    return out


def torch_same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.detach().contiguous(), b.detach().contiguous()
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def test_torch_round_trip_bf16_and_friends(tmp_path):
    tensors = torch_tensors()
    path = tmp_path / "t.lmc"
    lmc.save_file(tensors, path)
    back = lmc.load_file(path)  # "format": "pt" -> torch tensors
    for name, t in tensors.items():
        assert isinstance(back[name], torch.Tensor), name
        assert torch_same(back[name], t), name
    # The same file as NumPy: bfloat16 through ml_dtypes, bit for bit.
    as_np = lmc.load_file(path, framework="numpy")
    assert as_np["w_bf16"].dtype == ml_dtypes.bfloat16
    assert as_np["w_bf16"].tobytes() == tensors["w_bf16"].view(torch.int16).numpy().tobytes()


def test_misaligned_tensors_still_load(tmp_path):
    # A 3-element BF16 tensor puts the next F32 tensor at an offset that is
    # not a multiple of 4.
    tensors = {"a": np.ones(3, dtype=ml_dtypes.bfloat16), "b": np.arange(5, dtype=np.float32)}
    lmc.save_file(tensors, tmp_path / "m.lmc")
    for fw in ("numpy", "torch"):
        back = lmc.load_file(tmp_path / "m.lmc", framework=fw)
        assert np.asarray(back["b"]).tolist() == [0, 1, 2, 3, 4]


def write_safetensors(path, tensors: dict, metadata=None) -> bytes:
    """A safetensors file written the way the reference writer does it."""
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(ml_dtypes.bfloat16): "BF16"}
    for name, a in tensors.items():
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    data = struct.pack("<Q", len(text)) + text + b"".join(blobs)
    path.write_bytes(data)
    return data


def read_safetensors(data: bytes) -> tuple:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    return header, data[8 + n :]


def test_cli_decompresses_what_python_wrote(tmp_path, run_lmc):
    tensors = numpy_tensors()
    lmc.save_file(tensors, tmp_path / "p.safetensors.lmc", {"step": "7"})
    run_lmc("verify", tmp_path / "p.safetensors.lmc")
    run_lmc("decompress", tmp_path / "p.safetensors.lmc")
    header, payload = read_safetensors((tmp_path / "p.safetensors").read_bytes())
    assert header["__metadata__"] == {"format": "np", "step": "7"}
    for name, a in tensors.items():
        start, end = header[name]["data_offsets"]
        assert header[name]["shape"] == list(a.shape)
        want = np.array(a, order="C").astype(a.dtype.newbyteorder("<")).tobytes()
        assert payload[start:end] == want, name


def test_python_reads_what_the_cli_wrote(tmp_path, run_lmc):
    rng = np.random.default_rng(1)
    tensors = {
        "emb": rng.standard_normal((64, 32)).astype(np.float32),
        "w": rng.standard_normal((32, 32)).astype(ml_dtypes.bfloat16),
        "pos": np.arange(64, dtype=np.int64),
    }
    original = write_safetensors(tmp_path / "m.safetensors", tensors, {"source": "cli"})
    run_lmc("compress", tmp_path / "m.safetensors")
    back = lmc.load_file(tmp_path / "m.safetensors.lmc")
    for name, a in tensors.items():
        assert np_same(back[name], a), name
    assert lmc.load_metadata(tmp_path / "m.safetensors.lmc") == {"source": "cli"}
    # Whole files, both ways, byte for byte.
    assert lmc.decompress_file(tmp_path / "m.safetensors.lmc", tmp_path / "out.safetensors") == len(original)
    assert (tmp_path / "out.safetensors").read_bytes() == original
    lmc.compress_file(tmp_path / "m.safetensors", tmp_path / "py.lmc")
    assert (tmp_path / "py.lmc").read_bytes() == (tmp_path / "m.safetensors.lmc").read_bytes()
    info = lmc.verify(tmp_path / "py.lmc")
    assert info["tensors"] == 3 and info["original_len"] == len(original) and not info["delta"]


def test_raw_arrays_and_deltas(tmp_path, run_lmc):
    raw = np.linspace(-1, 1, 5000, dtype=np.float32).astype(ml_dtypes.bfloat16)
    (tmp_path / "w.bin").write_bytes(raw.tobytes())
    run_lmc("compress", tmp_path / "w.bin", "--dtype", "bf16")
    back = lmc.load_file(tmp_path / "w.bin.lmc")
    assert list(back) == ["data"] and np_same(back["data"], raw)

    rng = np.random.default_rng(2)
    old = {"w": rng.standard_normal(4096).astype(np.float32)}
    new = {"w": old["w"] + np.float32(1e-3) * (rng.standard_normal(4096) > 1.5)}
    write_safetensors(tmp_path / "old.safetensors", old)
    data_new = write_safetensors(tmp_path / "new.safetensors", new)
    full = lmc.compress_file(tmp_path / "new.safetensors", tmp_path / "full.lmc")
    delta = lmc.compress_file(tmp_path / "new.safetensors", tmp_path / "d.lmc", base=tmp_path / "old.safetensors")
    assert delta["compressed_len"] < full["compressed_len"]
    with pytest.raises(lmc.LmcError, match="delta container"):
        lmc.load_file(tmp_path / "d.lmc")
    assert np_same(lmc.load_file(tmp_path / "d.lmc", base=tmp_path / "old.safetensors")["w"], new["w"])
    assert lmc.verify(tmp_path / "d.lmc", base=tmp_path / "old.safetensors")["delta"]
    # The CLI decodes the Python delta, given the base.
    run_lmc("decompress", tmp_path / "d.lmc", "-o", tmp_path / "cli.safetensors", "--base", tmp_path / "old.safetensors")
    assert (tmp_path / "cli.safetensors").read_bytes() == data_new
    # A full .lmc of the base serves as the base too.
    lmc.compress_file(tmp_path / "old.safetensors", tmp_path / "old.lmc")
    lmc.decompress_file(tmp_path / "d.lmc", tmp_path / "py.safetensors", base=tmp_path / "old.lmc")
    assert (tmp_path / "py.safetensors").read_bytes() == data_new
    wrong = tmp_path / "new.safetensors"
    with pytest.raises(lmc.LmcError, match="wrong base"):
        lmc.verify(tmp_path / "d.lmc", base=wrong)


def test_best_is_smaller_or_equal_and_reads_back(tmp_path, run_lmc):
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((512, 256)) * 0.02).astype(ml_dtypes.bfloat16)
    sparse = np.where(rng.random((512, 256)) < 0.05, rng.standard_normal((512, 256)), 0).astype(np.float32)
    tensors = {"w": w, "sparse": sparse}
    plain = lmc.save_file(tensors, tmp_path / "plain.lmc")
    best = lmc.save_file(tensors, tmp_path / "best.lmc", best=True)
    assert best["compressed_len"] <= plain["compressed_len"]
    assert best["original_hash"] == plain["original_hash"]
    back = lmc.load_file(tmp_path / "best.lmc")
    assert np_same(back["w"], w) and np_same(back["sparse"], sparse)
    # compress_file takes it too, and the CLI decodes the result.
    data = write_safetensors(tmp_path / "t.safetensors", {"s": sparse})
    lmc.compress_file(tmp_path / "t.safetensors", tmp_path / "t.lmc", best=True)
    run_lmc("decompress", tmp_path / "t.lmc", "-o", tmp_path / "t2.safetensors")
    assert (tmp_path / "t2.safetensors").read_bytes() == data


def test_errors_are_lmc_errors_with_the_rust_message(tmp_path):
    with pytest.raises(lmc.LmcError, match="cannot read .*missing.lmc"):
        lmc.load_file(tmp_path / "missing.lmc")
    lmc.save_file({"w": np.arange(100000, dtype=np.float32)}, tmp_path / "ok.lmc")
    data = bytearray((tmp_path / "ok.lmc").read_bytes())
    data[200] ^= 0x40  # in the first chunk's payload
    (tmp_path / "bad.lmc").write_bytes(bytes(data))
    with pytest.raises(lmc.LmcError, match="checksum mismatch"):
        lmc.verify(tmp_path / "bad.lmc")
    with pytest.raises(lmc.LmcError, match="checksum mismatch"):
        lmc.load_file(tmp_path / "bad.lmc")
    (tmp_path / "short.lmc").write_bytes(bytes(data[:100]))
    with pytest.raises(lmc.LmcError):
        lmc.load_file(tmp_path / "short.lmc")
    (tmp_path / "x.txt").write_bytes(b"not a checkpoint")
    with pytest.raises(lmc.LmcError, match="not a safetensors file, a PyTorch checkpoint or a NumPy array"):
        lmc.compress_file(tmp_path / "x.txt")
    with pytest.raises(lmc.LmcError, match="not supported"):
        lmc.save_file({"c": np.zeros(3, dtype=np.complex64)}, tmp_path / "c.lmc")
    with pytest.raises(lmc.LmcError, match="not supported"):
        lmc.save_file({"c": torch.zeros(3, dtype=torch.complex64)}, tmp_path / "c.lmc")
    with pytest.raises(lmc.LmcError, match="bytes of data for shape"):
        _lmc.save_tensors(str(tmp_path / "s.lmc"), [("w", "F32", [3], b"\0" * 8)])
    with pytest.raises(TypeError):
        lmc.save_file([np.zeros(3)], tmp_path / "l.lmc")
    with pytest.raises(TypeError):
        lmc.save_file({1: np.zeros(3)}, tmp_path / "k.lmc")
    with pytest.raises(TypeError):
        lmc.save_file({"w": np.zeros(3)}, tmp_path / "m.lmc", metadata={"step": 3})
    assert issubclass(lmc.LmcError, Exception) and lmc.LmcError.__module__ == "lmc"
    # Nothing half-written is left behind by the failures above.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.lmc", "ok.lmc", "short.lmc", "x.txt"]


def test_the_gil_is_released_while_rust_works(tmp_path):
    """Another Python thread runs while a save compresses and a load decodes."""
    # Large enough that a load takes well over the 0.03 s the check needs
    # even on a fast machine (24 MB once took 0.029 s).
    big = np.random.default_rng(0).standard_normal(96 << 20 >> 2).astype(np.float32)  # 96 MB
    args = [("w", "F32", [big.size], big.tobytes())]
    path = str(tmp_path / "big.lmc")

    def measure(call) -> tuple:
        window = {}
        samples = []

        def work():
            window["start"] = time.perf_counter()
            call()
            window["end"] = time.perf_counter()

        t = threading.Thread(target=work)
        t.start()
        n = 0
        while t.is_alive():
            n += 1
            if n % 200 == 0:
                samples.append(time.perf_counter())
        t.join()
        start, end = window["start"], window["end"]
        inside = [s for s in samples if start + 0.01 < s < end - 0.01]
        return end - start, len(inside)

    for call in (lambda: _lmc.save_tensors(path, args), lambda: _lmc.load(path)):
        duration, inside = measure(call)
        assert duration > 0.03, "too little work to tell"
        # With the GIL held for the whole call the main thread could not run
        # at all in between.
        assert inside >= 5, (duration, inside)


def test_pytorch_and_numpy_files_as_the_cli_compresses_them(tmp_path, run_lmc):
    torch.save({"w": torch.randn(40, 30), "b": torch.zeros(3, dtype=torch.bfloat16), "n": 3}, tmp_path / "m.pt")
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    for name in ("m.pt", "a.npy"):
        src = tmp_path / name
        lmc.compress_file(src, tmp_path / f"{name}.py.lmc")
        run_lmc("compress", src)
        assert (tmp_path / f"{name}.py.lmc").read_bytes() == (tmp_path / f"{name}.lmc").read_bytes(), name
        lmc.decompress_file(tmp_path / f"{name}.py.lmc", tmp_path / f"back-{name}")
        assert (tmp_path / f"back-{name}").read_bytes() == src.read_bytes(), name
    # load_file gives the arrays lmc found: a .npy file's array, a PyTorch
    # file's storages (flat).
    assert np_same(lmc.load_file(tmp_path / "a.npy.lmc")["array"], np.arange(12, dtype=np.float32).reshape(3, 4))
    storages = lmc.load_file(tmp_path / "m.pt.lmc")
    assert sorted(a.size for a in storages.values()) == [3, 1200]


def test_compress_file_applies_the_cli_pickle_rule(tmp_path, run_lmc):
    """lmc.compress_file refuses what `lmc compress` refuses (one rule, in
    lmc-files): a checkpoint whose pickle names os.system, here written by
    torch.save itself and never loaded."""
    src = tmp_path / "evil.pt"
    torch.save({"w": torch.arange(4.0), "hook": os.system}, src)
    with pytest.raises(lmc.LmcError, match=r"evil.pt: .*data.pkl names (posix|os)\.system"):
        lmc.compress_file(src)
    assert not (tmp_path / "evil.pt.lmc").exists()
    cli = run_lmc("compress", str(src), check=False)
    assert cli.returncode == 1 and "names" in cli.stderr
    lmc.compress_file(src, allow_pickle_calls=True)
    lmc.decompress_file(tmp_path / "evil.pt.lmc", tmp_path / "back.pt")
    assert (tmp_path / "back.pt").read_bytes() == src.read_bytes()
    # An ordinary checkpoint passes.
    torch.save({"w": torch.arange(4.0), "step": 3}, tmp_path / "ok.pt")
    lmc.compress_file(tmp_path / "ok.pt")


def test_directory_containers_restore_as_the_cli_restores_them(tmp_path, run_lmc):
    import os
    import stat

    ckpt = tmp_path / "ckpt"
    (ckpt / "sub" / "empty").mkdir(parents=True)
    original = write_safetensors(ckpt / "m.safetensors", {"w": np.arange(64, dtype=np.float32)}, {})
    (ckpt / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(ckpt / "sub" / "run.sh", 0o750)
    os.symlink("../m.safetensors", ckpt / "sub" / "latest")
    run_lmc("compress", ckpt)
    n = lmc.decompress_file(tmp_path / "ckpt.lmc", tmp_path / "out")
    assert n > len(original)
    out = tmp_path / "out"
    assert (out / "m.safetensors").read_bytes() == original
    assert (out / "sub" / "run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(os.stat(out / "sub" / "run.sh").st_mode) == 0o750
    assert os.readlink(out / "sub" / "latest") == "../m.safetensors"
    assert (out / "sub" / "empty").is_dir()
    # A directory with something in it is never replaced.
    with pytest.raises(lmc.LmcError, match="out is a directory that is not empty"):
        lmc.decompress_file(tmp_path / "ckpt.lmc", out)
    assert (out / "m.safetensors").read_bytes() == original
    with pytest.raises(lmc.LmcError, match="never a delta"):
        lmc.decompress_file(tmp_path / "ckpt.lmc", tmp_path / "x", base=tmp_path / "ckpt.lmc")

    # Python compresses a directory as the CLI does: the same bytes.
    lmc.compress_file(ckpt, tmp_path / "py.lmc")
    assert (tmp_path / "py.lmc").read_bytes() == (tmp_path / "ckpt.lmc").read_bytes()
    # With the same pickle rule: a checkpoint inside that names os.system.
    torch.save({"hook": os.system}, ckpt / "evil.pt")
    with pytest.raises(lmc.LmcError, match=r"evil.pt: .*names (posix|os)\.system"):
        lmc.compress_file(ckpt, tmp_path / "evil.lmc")
    assert not (tmp_path / "evil.lmc").exists()
    with pytest.raises(lmc.LmcError, match="inside the directory being compressed"):
        lmc.compress_file(ckpt, ckpt / "x.lmc")


def test_read_tensors_into_fills_buffers_in_place(tmp_path):
    """The in-place read under StorageReader: each tensor decoded straight
    into its own buffer, byte for byte; a buffer of the wrong size or a
    strided one is refused, naming the tensor."""
    rng = np.random.default_rng(3)
    tensors = {"a": rng.standard_normal((64, 33)).astype(np.float32), "b": np.arange(1000, dtype=np.int64)}
    lmc.save_file(tensors, tmp_path / "t.lmc", chunk_size=4096)
    outs = [np.zeros(tensors[n].nbytes, dtype=np.uint8) for n in ("a", "b")]
    _lmc.read_tensors_into(str(tmp_path / "t.lmc"), ["a", "b"], outs)
    assert outs[0].tobytes() == tensors["a"].tobytes()
    assert outs[1].tobytes() == tensors["b"].tobytes()
    with pytest.raises(lmc.LmcError, match=r"tensor \"a\": 8448 bytes, the buffer for it has 8447"):
        _lmc.read_tensors_into(str(tmp_path / "t.lmc"), ["a"], [np.zeros(8447, dtype=np.uint8)])
    with pytest.raises(lmc.LmcError, match="not contiguous"):
        _lmc.read_tensors_into(str(tmp_path / "t.lmc"), ["b"], [np.zeros(16000, dtype=np.uint8)[::2]])
    with pytest.raises(lmc.LmcError, match="no tensor named"):
        _lmc.read_tensors_into(str(tmp_path / "t.lmc"), ["c"], [np.zeros(8, dtype=np.uint8)])
    # The general path checks each tensor's length against what the caller
    # expects (DCP's metadata) before allocating for it.
    got = _lmc.read_tensors(str(tmp_path / "t.lmc"), ["a", "b"], [8448, None])
    assert bytes(got[0]) == tensors["a"].tobytes() and bytes(got[1]) == tensors["b"].tobytes()
    with pytest.raises(lmc.LmcError, match=r"tensor \"a\": the container holds 8448 bytes of it, the checkpoint's metadata says 8"):
        _lmc.read_tensors(str(tmp_path / "t.lmc"), ["a"], [8])
