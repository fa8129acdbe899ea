"""PyTorch Distributed Checkpoint through lmc.torch.StorageWriter/StorageReader.

Two processes (torch.multiprocessing.spawn, gloo) train a tensor-parallel
model with AdamW and save its state with dcp.save and dcp.async_save; the
checks are made in those processes (load into fresh models, resharded
load, incremental saves through a training loop) and again here, in a
process that never joined the group (a load of every shard into full
tensors). Writers killed at chosen and random moments must leave the
previous checkpoint loadable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.api import CheckpointException

import lmc
import lmc.torch
from _workers import tree_diff, zeros_like_tree

HERE = Path(__file__).resolve().parent

warnings.filterwarnings("ignore", message=".*torch.distributed is not initialized.*")
warnings.filterwarnings("ignore", category=FutureWarning)


def load_single(path, reference: dict, **reader_args) -> list:
    """Loads a checkpoint in this (non-distributed) process into full
    tensors shaped like `reference`; returns the differences."""
    target = zeros_like_tree(reference)
    target["meta"] = {"epoch": -1, "note": ""}
    dcp.load(target, storage_reader=lmc.torch.StorageReader(path, **reader_args), no_dist=True)
    return tree_diff(target, reference)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dcp")
    from _workers import two_ranks

    mp.spawn(two_ranks, args=(2, str(tmp)), nprocs=2, join=True)
    results = [json.loads((tmp / f"results-{r}.json").read_text()) for r in range(2)]
    return tmp, results


def test_two_ranks_save_and_load_back_bit_exactly(two_rank_run):
    tmp, results = two_rank_run
    for rank, r in enumerate(results):
        assert r["load_ckpt"] == [], (rank, r["load_ckpt"])
        # Training goes on from the loaded state exactly as from the original.
        assert r["train_on"] == [], (rank, r["train_on"])
    names = sorted(os.listdir(tmp / "ckpt"))
    # Each rank wrote its own compressed file; the coordinator the metadata.
    assert names[0] == ".metadata" and len(names) == 3, names
    assert names[1].startswith("__0_0.") and names[2].startswith("__1_0."), names
    with open(tmp / "ckpt" / ".metadata", "rb") as f:
        md = pickle.load(f)
    assert type(md).__name__ == "Metadata"
    infos = list(md.storage_data.values())
    assert all(isinstance(i, lmc.torch.LmcStorageInfo) for i in infos)
    assert {i.relative_path for i in infos} == set(names[1:])
    assert "model.0.weight" in md.state_dict_metadata


def test_async_save(two_rank_run):
    tmp, results = two_rank_run
    for r in results:
        assert r["load_ckpt_async"] == []
    reference = torch.load(tmp / "ref.pt", weights_only=False)
    assert load_single(tmp / "ckpt_async", reference) == []


def test_fresh_process_loads_every_shard_into_full_tensors(two_rank_run):
    tmp, _ = two_rank_run
    reference = torch.load(tmp / "ref.pt", weights_only=False)
    assert reference["model"]["0.weight"].shape == (64, 32)
    assert load_single(tmp / "ckpt", reference) == []


def test_resharded_load_across_two_ranks(two_rank_run):
    _, results = two_rank_run
    for r in results:
        assert r["resharded"] == []
        assert len(r["resharded_placements"]) >= 2, r["resharded_placements"]


def test_rank_files_are_ordinary_lmc_files(two_rank_run, run_lmc):
    tmp, _ = two_rank_run
    for f in sorted((tmp / "ckpt").glob("__*.lmc")):
        run_lmc("verify", f)
        info = lmc.verify(f)
        assert info["tensors"] > 0
        assert lmc.load_metadata(f)["format"] == "pt"
        tensors = lmc.load_file(f)
        assert all(isinstance(t, torch.Tensor) for t in tensors.values())


def test_incremental_saves_through_a_training_loop(two_rank_run, run_lmc):
    tmp, results = two_rank_run
    for r in results:
        assert r["incremental_load_30"] == []
    run = tmp / "run"
    assert lmc.torch.saved_steps(run) == [10, 20, 30, 40, 50]
    for step in (10, 20, 30, 40, 50):
        reference = torch.load(tmp / f"ref-inc-{step}.pt", weights_only=False)
        assert load_single(run, reference, step=step) == [], step
    latest = torch.load(tmp / "ref-inc-50.pt", weights_only=False)
    assert load_single(run, latest) == []
    for rank in (0, 1):
        store = lmc.SnapshotStore(run / f"rank-{rank:05d}")
        snaps = store.list()
        assert [s["step"] for s in snaps] == [10, 20, 30, 40, 50]
        # The newest save whole, each other a delta against the same rank's
        # next save; chains of at most 2 deltas (keyframe_every 3).
        assert [s["parent"] for s in snaps] == [20, 30, None, 50, None]
        assert snaps[1]["stored_len"] < snaps[2]["stored_len"]
        run_lmc("snapshot", "verify", run / f"rank-{rank:05d}")


def run_killed(mode: str, where: Path, point: str, delay_fraction: float | None = None) -> bool:
    """Runs the kill target; returns whether it finished saving B."""
    cmd = [sys.executable, str(HERE / "_workers.py"), "kill", mode, str(where), point]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("SAVING"):
        proc.kill()
        raise AssertionError(f"kill target failed before saving B: {line}{proc.stderr.read()}")
    if delay_fraction is not None:
        time.sleep(delay_fraction * float(line.split()[1]))
        proc.kill()
    out, err = proc.communicate(timeout=300)
    if point != "random":
        assert proc.returncode == -9, (proc.returncode, err)
    return "SAVED" in out


KILLS = [
    ("files", "before-commit", None),
    ("files", "commit-rename", None),
    ("files", "after-commit", None),
    ("files", "random", 0.3),
    ("files", "random", 0.7),
    ("files", "random", 1.0),
    ("incremental", "before-commit", None),
    ("incremental", "commit-rename", None),
    ("incremental", "random", 0.4),
    ("incremental", "random", 0.8),
]


@pytest.mark.parametrize("mode,point,fraction", KILLS)
def test_a_killed_writer_leaves_the_previous_checkpoint_loadable(tmp_path, mode, point, fraction):
    if fraction is not None:
        fraction *= random.Random(f"{mode}{fraction}").uniform(0.8, 1.2)
    where = tmp_path / "ckpt"
    finished = run_killed(mode, where, point, fraction)
    a = torch.load(tmp_path / "A.pt", weights_only=False)
    b = torch.load(tmp_path / "B.pt", weights_only=False)
    committed_b = point == "after-commit" or finished
    loaded_a = load_single(where, a) == []
    loaded_b = load_single(where, b) == []
    if point in ("before-commit", "commit-rename"):
        assert loaded_a and not loaded_b
    elif point == "after-commit":
        assert loaded_b
    else:
        # Killed at a random moment: A, or B if it had committed; never a mix.
        assert loaded_a or loaded_b, (finished,)
        assert not committed_b or loaded_b

    # The next save goes through and cleans up what the killed one left.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "incremental":
            dcp.save(b, storage_writer=lmc.torch.StorageWriter(where, incremental=True, step=3), no_dist=True)
            assert load_single(where, a, step=1) == []
            assert load_single(where, b, step=3) == []
            assert lmc.torch.saved_steps(where)[-1] == 3
        else:
            dcp.save(b, storage_writer=lmc.torch.StorageWriter(where), no_dist=True)
            names = sorted(os.listdir(where))
            assert len(names) == 2 and names[0] == ".metadata", names
    assert load_single(where, b) == []


def test_pickled_items_follow_the_pickle_rule(tmp_path):
    """DCP pickles non-tensor items with torch.save and its planner loads
    them with torch.load(weights_only=False): the writer refuses items that
    torch.load(weights_only=True) would refuse, the reader refuses to hand
    such items (or a hostile .metadata) to torch, each unless allowed."""
    state = {"w": torch.arange(8.0), "meta": {"epoch": 3, "note": "ok"}}
    dcp.save(state, storage_writer=lmc.torch.StorageWriter(tmp_path / "ok"), no_dist=True)
    back = {"w": torch.zeros(8), "meta": {"epoch": -1, "note": ""}}
    dcp.load(back, storage_reader=lmc.torch.StorageReader(tmp_path / "ok"), no_dist=True)
    assert back["meta"] == {"epoch": 3, "note": "ok"} and torch.equal(back["w"], state["w"])

    # DCP wraps a storage layer's errors in its CheckpointException, whose
    # text carries lmc's message.
    refused = (lmc.LmcError, CheckpointException)
    evil = {"w": torch.arange(8.0), "hook": os.system}
    with pytest.raises(refused, match=r"item hook: .*names (posix|os)\.system"):
        dcp.save(evil, storage_writer=lmc.torch.StorageWriter(tmp_path / "evil"), no_dist=True)
    assert not (tmp_path / "evil" / ".metadata").exists()
    dcp.save(
        evil,
        storage_writer=lmc.torch.StorageWriter(tmp_path / "evil", allow_pickle_calls=True),
        no_dist=True,
    )
    target = {"w": torch.zeros(8), "hook": None}
    with pytest.raises(refused, match=r"item hook: .*names (posix|os)\.system"):
        dcp.load(target, storage_reader=lmc.torch.StorageReader(tmp_path / "evil"), no_dist=True)
    dcp.load(
        target,
        storage_reader=lmc.torch.StorageReader(tmp_path / "evil", allow_pickle_calls=True),
        no_dist=True,
    )
    assert target["hook"] is os.system

    # A .metadata that would call os.system when unpickled.
    class Boom:
        def __reduce__(self):
            return (os.system, ("true",))

    (tmp_path / "ok" / ".metadata").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(refused, match=r"\.metadata: names (posix|os)\.system"):
        dcp.load(back, storage_reader=lmc.torch.StorageReader(tmp_path / "ok"), no_dist=True)


def test_tied_weights_load_bit_exactly(tmp_path, monkeypatch):
    """Targets that share memory (tied weights: the same tensor twice, or
    overlapping views of one storage) are never decoded into the same bytes
    at once: of overlapping ones, one is decoded in place, the others copied
    after; targets that only touch still go in place."""
    w = torch.randn(16, 8)
    base = torch.randn(32, 8)
    state = {"a": w, "b": w, "c": base[:16], "d": base[8:24], "e": base[24:32]}
    dcp.save(state, storage_writer=lmc.torch.StorageWriter(tmp_path / "tied"), no_dist=True)

    in_place = []
    real = lmc.torch._lmc.read_tensors_into

    def recording(path, names, buffers):
        ranges = sorted((b.__array_interface__["data"][0], b.nbytes) for b in buffers)
        for (s0, n0), (s1, _) in zip(ranges, ranges[1:]):
            assert s0 + n0 <= s1, f"buffers decoded in place overlap: {names}"
        in_place.extend(names)
        return real(path, names, buffers)

    monkeypatch.setattr(lmc.torch._lmc, "read_tensors_into", recording)
    t = torch.zeros(16, 8)
    into = torch.zeros(32, 8)
    back = {"a": t, "b": t, "c": into[:16], "d": into[8:24], "e": into[24:32]}
    dcp.load(back, storage_reader=lmc.torch.StorageReader(tmp_path / "tied"), no_dist=True)
    assert back["a"] is t and back["b"] is t
    assert torch.equal(t.view(torch.int32), w.view(torch.int32))
    assert torch.equal(into.view(torch.int32), base.view(torch.int32))
    # One of a/b, one of c/d, and e (touching d's end, overlapping nothing).
    assert len(in_place) == 3, in_place


def test_incremental_newest_save_loads_in_place(tmp_path, monkeypatch):
    """In an incremental run the newest save is stored whole: it is decoded
    straight into the tensors DCP hands over, as a plain save is; an older
    one (a delta) is restored through its chain. Both bit for bit."""
    where = tmp_path / "run"
    torch.manual_seed(0)
    states = []
    w = torch.randn(64, 32)
    for step in (1, 2, 3):
        w = w + 0.01 * torch.randn(64, 32)
        state = {"w": w.clone(), "h": w.to(torch.bfloat16), "step": step}
        states.append(state)
        dcp.save(state, storage_writer=lmc.torch.StorageWriter(where, incremental=True, step=step), no_dist=True)

    in_place = []
    real = lmc.torch._lmc.read_tensors_into

    def recording(path, names, buffers):
        in_place.extend(names)
        return real(path, names, buffers)

    monkeypatch.setattr(lmc.torch._lmc, "read_tensors_into", recording)
    for step, expect_in_place in ((3, True), (1, False)):
        in_place.clear()
        want = states[step - 1]
        back = {"w": torch.zeros(64, 32), "h": torch.zeros(64, 32, dtype=torch.bfloat16), "step": -1}
        dcp.load(back, storage_reader=lmc.torch.StorageReader(where, step=step), no_dist=True)
        assert torch.equal(back["w"].view(torch.int32), want["w"].view(torch.int32))
        assert torch.equal(back["h"].view(torch.int16), want["h"].view(torch.int16))
        assert back["step"] == step
        assert bool(in_place) == expect_in_place, (step, in_place)


def test_data_files_outside_the_checkpoint_are_refused(tmp_path):
    """A hostile .metadata cannot make the reader open a .lmc file outside
    the checkpoint directory (absolute, or through ..)."""
    state = {"w": torch.arange(8.0)}
    ckpt = tmp_path / "ckpt"
    dcp.save(state, storage_writer=lmc.torch.StorageWriter(ckpt), no_dist=True)
    with open(ckpt / ".metadata", "rb") as f:
        md = pickle.load(f)
    (index, info), = md.storage_data.items()
    # A real shard there: without the check, the load would succeed.
    (tmp_path / "x.lmc").write_bytes((ckpt / info.relative_path).read_bytes())
    refused = (lmc.LmcError, CheckpointException)
    for bad in ["../x.lmc", str(tmp_path / "x.lmc"), "sub/../../x.lmc"]:
        md.storage_data[index] = dataclasses.replace(info, relative_path=bad)
        (ckpt / ".metadata").write_bytes(pickle.dumps(md))
        back = {"w": torch.zeros(8)}
        with pytest.raises(refused, match=r"item w .*not a plain relative path"):
            dcp.load(back, storage_reader=lmc.torch.StorageReader(ckpt), no_dist=True)
        assert torch.equal(back["w"], torch.zeros(8)), bad
    # Put back, it loads.
    md.storage_data[index] = info
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    back = {"w": torch.zeros(8)}
    dcp.load(back, storage_reader=lmc.torch.StorageReader(ckpt), no_dist=True)
    assert torch.equal(back["w"], state["w"])
