"""What runs in other processes for test_dcp.py.

- ``two_ranks``: one rank of a 2-process job (torch.multiprocessing.spawn,
  gloo): a tensor-parallel model and its AdamW state, saved and loaded
  through lmc's DCP storage, checked in place, and written out as
  references for the checks the test process makes.
- ``python _workers.py kill MODE DIR POINT``: a single-process writer that
  saves checkpoint A, then starts checkpoint B into the same place and is
  killed at POINT (or by the test at a random moment).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

import lmc.torch


# -- state helpers -----------------------------------------------------------


def is_dtensor(x: Any) -> bool:
    return type(x).__name__ == "DTensor"


def tree_map(fn, tree):
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [tree_map(fn, v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(tree_map(fn, v) for v in tree)
    return fn(tree)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def tree_diff(a, b, path: str = "") -> list:
    """Where two state trees differ (tensors compared bit for bit)."""
    if is_dtensor(a) or is_dtensor(b):
        if not (is_dtensor(a) and is_dtensor(b)):
            return [f"{path}: DTensor vs {type(b).__name__}"]
        if a.placements != b.placements:
            return [f"{path}: placements {a.placements} vs {b.placements}"]
        return tree_diff(a.to_local(), b.to_local(), path)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
        if a.dtype != b.dtype or a.shape != b.shape:
            return [f"{path}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"]
        return [] if torch.equal(bits(a), bits(b)) else [f"{path}: values differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"]
        return [d for k in a for d in tree_diff(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in tree_diff(x, y, f"{path}.{i}")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def local_copy(state):
    """The state as this rank holds it, copied (DTensors stay DTensors)."""
    def copy(x):
        if isinstance(x, torch.Tensor):
            return x.detach().clone()
        return x

    return tree_map(copy, state)


def full_copy(state):
    """The state with every DTensor gathered into a full tensor (collective)."""
    def gather(x):
        if is_dtensor(x):
            return x.full_tensor().detach().clone()
        if isinstance(x, torch.Tensor):
            return x.detach().clone()
        return x

    return tree_map(gather, state)


def zeros_like_tree(state):
    return tree_map(lambda x: torch.zeros_like(x) if isinstance(x, torch.Tensor) else x, state)


# -- the model ---------------------------------------------------------------


def build(seed: int, mesh=None, width: int = 64):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, 16), nn.LayerNorm(16))
    if mesh is not None:
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt


def train(model, opt, steps: int, seed: int) -> None:
    for i in range(steps):
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randn(8, 32, generator=g)
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def state_of(model, opt, epoch: int = 3) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "optim": osd, "meta": {"epoch": epoch, "note": "lmc"}}


def apply(model, opt, state) -> None:
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def resharded_target(state, mesh):
    """Zeros shaped like `state`, each DTensor split along another dimension."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    def other(x):
        if not is_dtensor(x):
            return torch.zeros_like(x) if isinstance(x, torch.Tensor) else x
        (p,) = x.placements
        if x.dim() == 2:
            new = Shard(1) if isinstance(p, Shard) and p.dim == 0 else Shard(0)
        else:
            new = Replicate() if isinstance(p, Shard) else Shard(0)
        return distribute_tensor(torch.zeros(x.shape, dtype=x.dtype), mesh, [new])

    return tree_map(other, state)


# -- two ranks ---------------------------------------------------------------


def two_ranks(rank: int, world: int, tmp: str) -> None:
    tmp_path = Path(tmp)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world)
    try:
        _two_ranks(rank, world, tmp_path)
        # Both ranks done before either tears gloo down: a rank that
        # destroyed its group while the other's last collective was still
        # in flight is one way gloo aborts ("terminate called without an
        # active exception", seen once under load).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _two_ranks(rank: int, world: int, tmp: Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    results: dict = {}
    model, opt = build(0, mesh)
    train(model, opt, 3, 100)
    state = state_of(model, opt)
    saved = local_copy(state)
    ref = full_copy(state)

    t = time.perf_counter()
    dcp.save(state, storage_writer=lmc.torch.StorageWriter(tmp / "ckpt"))
    results["save_seconds"] = time.perf_counter() - t
    fut = dcp.async_save(state, storage_writer=lmc.torch.StorageWriter(tmp / "ckpt_async"))
    fut.result()
    if rank == 0:
        torch.save(ref, tmp / "ref.pt")

    # Load into a fresh model and optimizer (other weights, optimizer state
    # at another step), bit for bit, then train both one more step alike.
    for name in ("ckpt", "ckpt_async"):
        model2, opt2 = build(50 + rank, mesh)
        train(model2, opt2, 1, 999)
        target = state_of(model2, opt2, epoch=0)
        dcp.load(target, storage_reader=lmc.torch.StorageReader(tmp / name))
        apply(model2, opt2, target)
        diff = tree_diff(local_copy(state_of(model2, opt2)), saved)
        diff += tree_diff(target["meta"], saved["meta"], "meta")
        results[f"load_{name}"] = diff
    train(model, opt, 1, 555)
    train(model2, opt2, 1, 555)
    results["train_on"] = tree_diff(local_copy(state_of(model2, opt2)), local_copy(state_of(model, opt)))

    # Resharded load: the same checkpoint into DTensors split otherwise.
    target = resharded_target(saved, mesh)
    dcp.load(target, storage_reader=lmc.torch.StorageReader(tmp / "ckpt"))
    results["resharded"] = tree_diff(full_copy(target), ref)
    results["resharded_placements"] = sorted(
        {str(x.placements) for x in _leaves(target) if is_dtensor(x)}
    )

    # Incremental mode through a training loop: each save a delta against
    # this rank's previous one, a keyframe every 3.
    writer = lmc.torch.StorageWriter(tmp / "run", incremental=True, keyframe_every=3)
    for k in range(5):
        train(model, opt, 2, 200 + 10 * k)
        state = state_of(model, opt, epoch=k)
        writer.step = (k + 1) * 10
        dcp.save(state, storage_writer=writer)
        ref_k = full_copy(state)
        if rank == 0:
            torch.save(ref_k, tmp / f"ref-inc-{(k + 1) * 10}.pt")
        if k == 2:
            saved_30 = local_copy(state)
    model3, opt3 = build(70 + rank, mesh)
    train(model3, opt3, 1, 999)
    target = state_of(model3, opt3, epoch=0)
    dcp.load(target, storage_reader=lmc.torch.StorageReader(tmp / "run", step=30))
    results["incremental_load_30"] = tree_diff(local_copy(target), saved_30)

    (tmp / f"results-{rank}.json").write_text(json.dumps(results))
    dist.barrier()


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


# -- a writer to kill --------------------------------------------------------


def kill_self() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_target(mode: str, where: str, point: str) -> None:
    """Saves A, then B into the same place; dies at `point` while saving B."""
    where_path = Path(where)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1024), nn.GELU(), nn.Linear(1024, 1024), nn.Linear(1024, 1024))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        model(torch.randn(16, 1024, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        return state_of(model, opt, epoch=seed)

    def writer(label: int):
        if mode == "incremental":
            return lmc.torch.StorageWriter(where_path, incremental=True, step=label)
        return lmc.torch.StorageWriter(where_path)

    state = step(1)
    t = time.perf_counter()
    dcp.save(state, storage_writer=writer(1), no_dist=True)
    took = time.perf_counter() - t
    torch.save(full_copy(state), where_path.parent / "A.pt")
    state = step(2)
    torch.save(full_copy(state), where_path.parent / "B.pt")

    if point == "before-commit":
        lmc.torch.StorageWriter.finish = lambda self, metadata, results: kill_self()
    elif point == "commit-rename":
        real_replace = os.replace

        def replace(src, dst):
            if str(dst).endswith(".metadata"):
                kill_self()
            real_replace(src, dst)

        os.replace = replace
    elif point == "after-commit":
        # Dies in the clean-up that follows the commit (files mode).
        real_scandir = os.scandir

        def scandir(path="."):
            if Path(path) == where_path:
                kill_self()
            return real_scandir(path)

        os.scandir = scandir
    print(f"SAVING {took:.3f}", flush=True)
    dcp.save(state, storage_writer=writer(2), no_dist=True)
    print("SAVED", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "kill":
        kill_target(*sys.argv[2:5])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]}")
