"""SnapshotStore on object storage (s3://bucket/prefix) against moto_server,
the S3-compatible server .ci/run starts (LMC_TEST_S3_ENDPOINT); skipped,
saying so, without it. The same Rust store as a directory's: these check
that the Python front end reaches it with URLs, and the lock's messages."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
import lmc

from conftest import s3_bucket
from test_store import same, training_states

ENDPOINT = os.environ.get("LMC_TEST_S3_ENDPOINT")

pytestmark = pytest.mark.skipif(
    ENDPOINT is None,
    reason="LMC_TEST_S3_ENDPOINT is not set: start `eval $(scripts/s3-server.sh start)` or run .ci/run",
)



@pytest.fixture
def prefix(monkeypatch) -> str:
    """A new bucket's prefix, with this process's environment pointing at the server."""
    bucket = s3_bucket(monkeypatch, ENDPOINT, f"lmc-py-{uuid.uuid4().hex[:12]}", LMC_RETRIES="2")
    return f"s3://{bucket}/runs/a"


def test_add_restore_list_verify_prune_on_s3(prefix):
    store = lmc.SnapshotStore(prefix, keyframe_every=4)
    states = training_states(5)
    for i, sd in enumerate(states):
        store.add(sd, step=10 * i)
    assert store.steps() == [0, 10, 20, 30, 40]
    assert [s["parent"] for s in store.list()][:2] == [10, 20]
    for i, sd in enumerate(states):
        got = store.restore(10 * i)
        assert got.keys() == sd.keys()
        assert all(same(got[k], sd[k]) for k in sd)
    report = store.verify()
    assert report["snapshots"] == 5 and report["unreferenced"] == []
    store.prune(keep_last=2)
    assert store.steps() == [30, 40]
    assert all(same(v, states[3][k]) for k, v in store.restore(30).items())


def test_background_and_deferred_adds_on_s3(prefix):
    store = lmc.SnapshotStore(prefix)
    states = training_states(3)
    store.add(states[0], step=1)
    handle = store.add(states[1], step=2, background=True)
    assert handle.wait()["step"] == 2
    store.add(states[2], step=3, defer=True)
    lmc.finish_stores()
    assert store.steps() == [1, 2, 3]
    assert all(same(v, states[1][k]) for k, v in store.restore(2).items())
    assert store.verify()["snapshots"] == 3


def test_a_dead_writers_lock_refuses_then_expires(prefix, tmp_path, lmc_bin):
    store = lmc.SnapshotStore(prefix)
    states = training_states(2)
    store.add(states[0], step=1)
    ckpt = tmp_path / "ckpt.bin"
    ckpt.write_bytes(os.urandom(4096))
    env = dict(os.environ, LMC_STORE_FAILPOINT="commit:objects-synced", LMC_STORE_LOCK_LEASE="3")
    died = subprocess.run(
        [lmc_bin, "snapshot", "add", prefix, str(ckpt), "--step", "2", "-q"], env=env, capture_output=True
    )
    assert died.returncode != 0
    with pytest.raises(lmc.LmcError, match=f"lock {prefix}/lock is held by"):
        store.add(states[1], step=2)
    start = time.monotonic()
    store.add(states[1], step=2, timeout=30)
    assert time.monotonic() - start < 30
    assert store.steps() == [1, 2]
    assert store.verify()["unreferenced"] == []
