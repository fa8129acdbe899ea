"""lmc.torch.StorageWriter/StorageReader on object storage (s3://bucket/prefix)
against moto_server (LMC_TEST_S3_ENDPOINT, which .ci/run sets; skipped,
saying so, without it): rank files uploaded whole first, ``.metadata``
last, the replaced checkpoint's objects deleted after; incremental saves in
snapshot stores under the prefix."""

from __future__ import annotations

import os
import uuid
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp

import lmc
import lmc.torch
from _workers import build, state_of, train, tree_diff, zeros_like_tree
from conftest import s3_bucket

ENDPOINT = os.environ.get("LMC_TEST_S3_ENDPOINT")

pytestmark = pytest.mark.skipif(
    ENDPOINT is None,
    reason="LMC_TEST_S3_ENDPOINT is not set: start `eval $(scripts/s3-server.sh start)` or run .ci/run",
)

warnings.filterwarnings("ignore", message=".*torch.distributed is not initialized.*")
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture
def prefix(monkeypatch) -> str:
    """A new bucket's prefix, with this process's environment pointing at the server."""
    bucket = s3_bucket(monkeypatch, ENDPOINT, f"lmc-dcp-{uuid.uuid4().hex[:12]}", LMC_RETRIES="2")
    return f"s3://{bucket}/ckpt"


def states(n: int) -> list:
    """The state (model and AdamW) after each of `n` rounds of training."""
    model, opt = build(0)
    out = []
    for i in range(n):
        train(model, opt, 2, seed=i)
        out.append(state_of(model, opt, epoch=i))
    return [_copy(s) for s in out]


def _copy(tree):
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    return tree


def load(where, reference, **reader_args) -> list:
    target = zeros_like_tree(reference)
    target["meta"] = {"epoch": -1, "note": ""}
    dcp.load(target, storage_reader=lmc.torch.StorageReader(where, **reader_args), no_dist=True)
    return tree_diff(target, reference)


def test_save_load_replace_on_s3(prefix):
    a, b = states(2)
    dcp.save(a, storage_writer=lmc.torch.StorageWriter(prefix), no_dist=True)
    first = sorted(lmc._lmc.remote_list(prefix))
    assert first[0] == ".metadata" and all(n.endswith(".lmc") for n in first[1:]), first
    assert load(prefix, a) == []
    # A second save into the same prefix: new objects, then .metadata, then
    # the first save's objects go.
    dcp.save(b, storage_writer=lmc.torch.StorageWriter(prefix), no_dist=True)
    second = sorted(lmc._lmc.remote_list(prefix))
    assert len(second) == len(first) and not set(second[1:]) & set(first[1:]), (first, second)
    assert load(prefix, b) == []


def test_a_writer_that_dies_before_metadata_leaves_the_previous_checkpoint(prefix, monkeypatch):
    a, b = states(2)
    dcp.save(a, storage_writer=lmc.torch.StorageWriter(prefix), no_dist=True)

    def die(self, metadata, results):
        raise KeyboardInterrupt("killed before writing .metadata")

    with monkeypatch.context() as m:
        m.setattr(lmc.torch.StorageWriter, "finish", die)
        with pytest.raises(BaseException):
            dcp.save(b, storage_writer=lmc.torch.StorageWriter(prefix), no_dist=True)
    # B's objects are there, unnamed; A loads.
    assert load(prefix, a) == []
    dcp.save(b, storage_writer=lmc.torch.StorageWriter(prefix), no_dist=True)
    assert load(prefix, b) == []
    names = lmc._lmc.remote_list(prefix)
    assert len(names) == 2, names


def test_incremental_saves_on_s3(prefix):
    saved = states(3)
    for step, s in zip((10, 20, 30), saved):
        w = lmc.torch.StorageWriter(prefix, incremental=True, step=step, defer=False)
        dcp.save(s, storage_writer=w, no_dist=True)
    assert lmc.torch.saved_steps(prefix) == [10, 20, 30]
    assert load(prefix, saved[2]) == []
    assert load(prefix, saved[0], step=10) == []
    store = lmc.SnapshotStore(f"{prefix}/rank-00000")
    assert store.steps() == [10, 20, 30]
    assert [s["parent"] for s in store.list()] == [20, 30, None]
    assert store.verify()["unreferenced"] == []
