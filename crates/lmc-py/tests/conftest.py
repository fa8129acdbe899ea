"""Shared helpers: the lmc CLI binary, bitwise comparisons of tensors, the S3
test server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]


def find_lmc_bin() -> str | None:
    """The `lmc` binary: $LMC_BIN, else one built in the repository's target/."""
    env = os.environ.get("LMC_BIN")
    if env:
        return env
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "lmc"
        if p.is_file():
            return str(p)
    return shutil.which("lmc")


@pytest.fixture(scope="session")
def lmc_bin() -> str:
    b = find_lmc_bin()
    if b is None:
        pytest.skip("no lmc binary: build it with `cargo build -p lmc-cli` or set LMC_BIN")
    return b


@pytest.fixture
def run_lmc(lmc_bin):
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([lmc_bin, *map(str, args)], capture_output=True, text=True)
        if check and p.returncode != 0:
            raise AssertionError(f"lmc {' '.join(map(str, args))} failed:\n{p.stderr}")
        return p

    return run


def np_same(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (so NaN payloads and -0.0 count)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def s3_bucket(monkeypatch, endpoint: str, bucket: str, **extra: str) -> str:
    """Points this process's environment at the S3 test server (moto, at
    `endpoint`; `extra` adds variables) and creates `bucket` there. Returns
    the bucket's name."""
    import urllib.request

    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        **extra,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # moto takes unsigned requests.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=30).read()
    return bucket
