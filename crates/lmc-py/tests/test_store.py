"""SnapshotStore: a training run's snapshots as deltas, shared with `lmc snapshot`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lmc


def training_states(n: int) -> list:
    """State dicts of a small model over `n` optimizer steps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    states = []
    for step in range(n):
        x = torch.randn(32, 64)
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        sd["0.weight.bf16"] = sd["0.weight"].to(torch.bfloat16)
        states.append(sd)
    return states


def same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


def test_add_restore_list_verify_prune(tmp_path):
    store = lmc.SnapshotStore(tmp_path / "run.lmcstore", keyframe_every=4)
    states = training_states(6)
    for i, sd in enumerate(states):
        snap = store.add(sd, step=(i + 1) * 100)
        assert snap["step"] == (i + 1) * 100
    listed = store.list()
    assert store.steps() == [100, 200, 300, 400, 500, 600]
    # The newest whole, each other a delta against the one after it; 400
    # stays whole, else restoring 100 would decode 4 deltas.
    assert [s["depth"] for s in listed] == [3, 2, 1, 0, 1, 0]
    assert [s["parent"] for s in listed] == [200, 300, 400, None, 600, None]
    # Deltas of a model in training are smaller than whole snapshots.
    assert listed[2]["stored_len"] < listed[3]["stored_len"]
    for i, sd in enumerate(states):
        back = store.restore((i + 1) * 100)
        assert list(back) == list(sd)
        for k in sd:
            assert isinstance(back[k], torch.Tensor) and same(back[k], sd[k]), (i, k)
    last = store.restore()
    assert same(last["2.bias"], states[-1]["2.bias"])
    as_np = store.restore(300, framework="numpy")
    assert isinstance(as_np["2.bias"], np.ndarray)
    report = store.verify()
    assert report["snapshots"] == 6 and report["unreferenced"] == []
    with pytest.raises(lmc.LmcError, match="not after the last snapshot"):
        store.add(states[0], step=600)
    with pytest.raises(lmc.LmcError, match="no snapshot at step 150"):
        store.restore(150)
    pruned = store.prune(keep_last=2)
    assert pruned["removed"] == [100, 200, 300, 400]
    assert store.steps() == [500, 600]
    assert same(store.restore(600)["0.weight"], states[5]["0.weight"])


def test_the_cli_reads_the_store(tmp_path, run_lmc):
    root = tmp_path / "s"
    store = lmc.SnapshotStore(root)
    states = training_states(3)
    for i, sd in enumerate(states):
        store.add(sd, step=i, metadata={"run": "test"})
    listed = json.loads(run_lmc("snapshot", "list", root, "--json").stdout)
    steps = [s["step"] for s in (listed["snapshots"] if isinstance(listed, dict) else listed)]
    assert steps == [0, 1, 2]
    run_lmc("snapshot", "verify", root)
    run_lmc("snapshot", "restore", root, "2", "-o", tmp_path / "two.safetensors")
    lmc.compress_file(tmp_path / "two.safetensors")
    back = lmc.load_file(tmp_path / "two.safetensors.lmc")
    assert lmc.load_metadata(tmp_path / "two.safetensors.lmc") == {"format": "pt", "run": "test"}
    for k, v in states[2].items():
        assert same(back[k], v), k
    # restore_to writes the same bytes as the CLI.
    store.restore_to(2, tmp_path / "py.safetensors")
    assert (tmp_path / "py.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()
    # A directory that holds no store is refused, with lmc's message.
    with pytest.raises(lmc.LmcError, match="not an lmc snapshot store"):
        lmc.SnapshotStore(tmp_path / "nothing").list()


def test_readers_work_while_a_writer_holds_the_store_and_writers_wait(tmp_path):
    import fcntl
    import threading
    import time

    root = tmp_path / "run.lmcstore"
    store = lmc.SnapshotStore(root)
    states = training_states(3)
    store.add(states[0], step=1)
    held = open(root / "lock", "w")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        # Readers take no lock.
        assert store.steps() == [1]
        assert same(store.restore(1)["2.bias"], states[0]["2.bias"])
        assert store.verify()["snapshots"] == 1
        # A writer fails at once by default, or after its timeout.
        with pytest.raises(lmc.LmcError, match="in use by another lmc process"):
            store.add(states[1], step=2)
        t = time.monotonic()
        with pytest.raises(lmc.LmcError, match="still after"):
            store.prune(keep_last=1, timeout=0.3)
        assert time.monotonic() - t >= 0.3
        with pytest.raises(ValueError, match="timeout"):
            store.remove(1, timeout=-1)
        # timeout=None waits as long as it takes.
        threading.Timer(0.5, held.close).start()
        store.add(states[1], step=2, timeout=None)
    finally:
        held.close()
    assert store.steps() == [1, 2]


def test_remove(tmp_path):
    store = lmc.SnapshotStore(tmp_path / "run.lmcstore")
    states = training_states(3)
    for i, sd in enumerate(states):
        store.add(sd, step=i + 1)
    report = store.remove(2)
    # 1 was a delta against 2: re-encoded against 3.
    assert report["removed"] == [2] and report["rebuilt"] == [1]
    assert store.steps() == [1, 3]
    assert same(store.restore(3)["0.weight"], states[2]["0.weight"])
    with pytest.raises(lmc.LmcError, match="no snapshot at step 2"):
        store.remove(2)
    store.remove(1)
    store.remove(3)
    assert store.steps() == []
    store.add(states[0], step=7)
    assert store.steps() == [7]


def test_background_adds(tmp_path):
    """add(background=True) returns a handle once the tensors are copied;
    the caller may change them at once; adds run one at a time; wait()
    gives the snapshot or the add's error, and releases the GIL."""
    import threading

    store = lmc.SnapshotStore(tmp_path / "run.lmcstore")
    states = training_states(4)
    handles = []
    for i, sd in enumerate(states):
        live = {k: v.clone() for k, v in sd.items()}
        h = store.add(live, step=i + 1, background=True)
        assert isinstance(h, lmc.AddHandle)
        for v in live.values():
            v.zero_()  # training goes on
        handles.append(h)
    for i, h in enumerate(handles):
        assert h.wait()["step"] == i + 1
        assert h.done()
    assert store.steps() == [1, 2, 3, 4]
    for i, sd in enumerate(states):
        back = store.restore(i + 1)
        assert all(same(back[k], sd[k]) for k in sd), i
    assert store.verify()["snapshots"] == 4

    # The add's error comes from wait(), every time it is called.
    h = store.add(states[0], step=2, background=True)
    for _ in range(2):
        with pytest.raises(lmc.LmcError, match="not after the last snapshot"):
            h.wait()
    assert store.steps() == [1, 2, 3, 4]
    # A failed add whose handle nobody waited for: the next call says so.
    store.add(states[0], step=3, background=True)
    with pytest.raises(lmc.LmcError, match="background add of step 3 failed"):
        store.add(states[0], step=5)
    assert store.steps() == [1, 2, 3, 4]

    # Another Python thread runs while wait() blocks.
    big = {"w": torch.randn(8_000_000)}
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)

    h = store.add(big, step=10, background=True)
    t = threading.Thread(target=tick)
    t.start()
    h.wait()
    stop.set()
    t.join()
    assert len(ticks) > 100
    assert same(store.restore(10)["w"], big["w"])
    # Each snapshot a delta against the next, but 4, which has no tensor in
    # common with 10 (it stays whole), and 10, the newest.
    assert [s["parent"] for s in store.list()] == [2, 3, 4, None, None]


def test_deferred_adds(tmp_path):
    """add(defer=True) commits the new snapshot whole and re-encodes the
    previous one on another thread; every snapshot restores throughout;
    finish_stores waits; the layout ends as plain adds leave it; a
    subprocess that exits right after a deferred add still finishes."""
    import subprocess
    import sys

    states = training_states(5)
    plain = lmc.SnapshotStore(tmp_path / "plain.lmcstore", keyframe_every=3)
    lazy = lmc.SnapshotStore(tmp_path / "lazy.lmcstore", keyframe_every=3)
    for i, sd in enumerate(states):
        plain.add(sd, step=i + 1)
        snap = lazy.add(sd, step=i + 1, defer=True)
        assert snap["step"] == i + 1 and snap["parent"] is None
        # Whatever the background thread has done so far, all restore.
        for j in range(i + 1):
            back = lazy.restore(j + 1)
            assert all(same(back[k], states[j][k]) for k in states[j]), (i, j)
    lmc.finish_stores(tmp_path / "lazy.lmcstore")
    shape = lambda st: [(s["step"], s["parent"], s["depth"], s["stored_len"]) for s in st.list()]
    assert shape(lazy) == shape(plain)
    assert [s["parent"] for s in lazy.list()] == [2, 3, None, 5, None]
    assert lazy.verify()["snapshots"] == 5
    with pytest.raises(ValueError, match="give one"):
        lazy.add(states[0], step=9, background=True, defer=True)

    # The interpreter's exit waits for the re-encoding.
    root = tmp_path / "exit.lmcstore"
    script = (
        "import sys, torch, lmc\n"
        "s = lmc.SnapshotStore(sys.argv[1])\n"
        "torch.manual_seed(1)\n"
        "w = torch.randn(1_000_000)\n"
        "s.add({'w': w}, step=1)\n"
        "w[::7] += 1e-3\n"
        "s.add({'w': w}, step=2, defer=True)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(root)], check=True)
    listed = lmc.SnapshotStore(root).list()
    assert [s["parent"] for s in listed] == [2, None]
    assert listed[0]["stored_len"] * 2 < listed[1]["stored_len"]
