#!/usr/bin/env python3
"""Times a PyTorch Distributed Checkpoint save and load with and without lmc.

A GPT-style model (token embedding, pre-norm transformer blocks, tied
output) is trained a few steps with AdamW on random tokens, so that the
optimizer's moments are filled in; then its state dict (model and
optimizer, from torch.distributed.checkpoint.state_dict.get_state_dict)
is saved and loaded with dcp.save / dcp.load through

  - torch's FileSystemWriter / FileSystemReader (DCP's default, uncompressed),
  - lmc.torch.StorageWriter / StorageReader,
  - lmc.torch.StorageWriter(incremental=True): a second save after more
    training steps, stored as a delta against the first.

Every save syncs its files (sync_files=True, the default of both writers).
Each measurement is the median of --repeat runs into a fresh directory; the
loaded state is checked bit for bit against the saved one.

    target/python-venv/bin/python scripts/bench_dcp.py [--layers 8 --width 768] [--json out.json]

(scripts/python-tests.sh makes that environment.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

import lmc
import lmc.torch

warnings.filterwarnings("ignore")


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, width: int, layers: int, heads: int, context: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t))
        mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        for b in self.blocks:
            x = b(x, mask)
        return self.ln(x) @ self.tok.weight.T


def train(model, opt, steps: int, args, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, args.vocab, (args.batch, args.context + 1), generator=g)
        logits = model(idx[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, args.vocab), idx[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()


def state_of(model, opt) -> dict:
    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "optim": osd}


def copy_tree(x):
    if isinstance(x, dict):
        return {k: copy_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [copy_tree(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    return x


def zeros_tree(x):
    if isinstance(x, dict):
        return {k: zeros_tree(v) for k, v in x.items()}
    if isinstance(x, list):
        return [zeros_tree(v) for v in x]
    if isinstance(x, torch.Tensor):
        return torch.zeros_like(x)
    return x


def same_tree(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tree(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
        )
    return a == b


def tensor_bytes(x) -> int:
    if isinstance(x, dict):
        return sum(tensor_bytes(v) for v in x.values())
    if isinstance(x, list):
        return sum(tensor_bytes(v) for v in x)
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    return 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="training steps before the first save")
    ap.add_argument("--more-steps", type=int, default=2, help="training steps between the two incremental saves")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="model and optimizer state dtype")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = GPT(args.vocab, args.width, args.layers, args.heads, args.context)
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    params = sum(p.numel() for p in model.parameters())
    t = time.perf_counter()
    train(model, opt, args.steps, args, seed=1)
    print(f"model: {params / 1e6:.1f} M parameters ({args.dtype}), trained {args.steps} steps in {time.perf_counter() - t:.1f} s")
    state = state_of(model, opt)
    saved = copy_tree(state)
    total = tensor_bytes(state)
    print(f"state dict: {total / 1e6:.1f} MB of tensors (model + AdamW moments)")

    base = Path(args.dir or tempfile.mkdtemp(prefix="bench-dcp-"))
    base.mkdir(parents=True, exist_ok=True)
    rows = []

    def measure(name, make_writer, make_reader) -> dict:
        saves, loads, size = [], [], 0
        for r in range(args.repeat):
            where = base / f"{name}-{r}"
            shutil.rmtree(where, ignore_errors=True)
            saves.append(timed(lambda: dcp.save(state, storage_writer=make_writer(where), no_dist=True)))
            size = dir_bytes(where)
            target = zeros_tree(saved)
            loads.append(timed(lambda: dcp.load(target, storage_reader=make_reader(where), no_dist=True)))
            if not same_tree(target, saved):
                raise SystemExit(f"{name}: the loaded state differs from the saved one")
            shutil.rmtree(where)
        row = {
            "method": name,
            "save_s": statistics.median(saves),
            "load_s": statistics.median(loads),
            "bytes": size,
            "saves": saves,
            "loads": loads,
        }
        rows.append(row)
        return row

    measure("dcp FileSystemWriter", dcp.FileSystemWriter, dcp.FileSystemReader)
    measure("lmc StorageWriter", lmc.torch.StorageWriter, lmc.torch.StorageReader)

    # Incremental: the first save is a keyframe, the second (after more
    # training) a delta against it.
    first_saves, second_saves, second_loads, delta_bytes = [], [], [], 0
    for r in range(args.repeat):
        where = base / f"incremental-{r}"
        shutil.rmtree(where, ignore_errors=True)
        torch.manual_seed(0)
        m = GPT(args.vocab, args.width, args.layers, args.heads, args.context)
        if args.dtype == "bf16":
            m = m.to(torch.bfloat16)
        o = torch.optim.AdamW(m.parameters(), lr=3e-4)
        train(m, o, args.steps, args, seed=1)
        s = state_of(m, o)
        first_saves.append(
            timed(lambda: dcp.save(s, storage_writer=lmc.torch.StorageWriter(where, incremental=True, step=1), no_dist=True))
        )
        train(m, o, args.more_steps, args, seed=2)
        s = state_of(m, o)
        ref = copy_tree(s)
        before = dir_bytes(where)
        second_saves.append(
            timed(lambda: dcp.save(s, storage_writer=lmc.torch.StorageWriter(where, incremental=True, step=2), no_dist=True))
        )
        delta_bytes = dir_bytes(where) - before
        target = zeros_tree(ref)
        second_loads.append(timed(lambda: dcp.load(target, storage_reader=lmc.torch.StorageReader(where), no_dist=True)))
        if not same_tree(target, ref):
            raise SystemExit("incremental: the loaded state differs from the saved one")
        shutil.rmtree(where)
    rows.append(
        {
            "method": f"lmc incremental, 2nd save ({args.more_steps} steps later)",
            "save_s": statistics.median(second_saves),
            "load_s": statistics.median(second_loads),
            "bytes": delta_bytes,
            "saves": second_saves,
            "loads": second_loads,
            "first_save_s": statistics.median(first_saves),
        }
    )

    ref_size = rows[0]["bytes"]
    print()
    print("| method | save (s) | load (s) | on disk (MB) | vs DCP default |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['method']} | {row['save_s']:.2f} | {row['load_s']:.2f} | {row['bytes'] / 1e6:.1f} | "
            f"{row['bytes'] / ref_size:.3f} |"
        )
    print()
    print(f"medians of {args.repeat} runs; {os.cpu_count()} cores; torch {torch.__version__}; lmc {lmc.__version__}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "params": params,
                    "dtype": args.dtype,
                    "state_bytes": total,
                    "cores": os.cpu_count(),
                    "machine": platform.machine(),
                    "torch": torch.__version__,
                    "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "rows": rows,
                },
                indent=2,
            )
        )
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
