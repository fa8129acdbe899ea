#!/usr/bin/env python3
"""Times PyTorch Distributed Checkpoint saves and loads: plain, zstd, lmc.

The state dict (default, --source series) is the newest checkpoint of the
series scripts/gen-series.sh generates: a GPT pre-training run and a MiniLM
fine-tune, each with its fp32 weights, a BF16 copy and its AdamW state
(exp_avg, exp_avg_sq) plus the step as a non-tensor item. --source gpt
instead trains a GPT-style model a few steps on random tokens (no series
needed). The state dict is saved with dcp.save and loaded with dcp.load
through

  - torch's FileSystemWriter / FileSystemReader (DCP's default, uncompressed),
  - FileSystemWriter(_extensions=[ZStandard()]) / FileSystemReader: DCP's
    own zstd stream extension (torch >= 2.7; needs the zstandard or pyzstd
    module, else the row is left out and the script says so),
  - lmc.torch.StorageWriter / StorageReader,
  - lmc.torch.StorageWriter(incremental=True): the previous checkpoint of
    the series (or the model before --more-steps further steps) saved
    first, then the newest one as a delta against it, and the newest loaded.
    FileSystemWriter has no incremental mode: its second save is a full
    save, which is the rows above.

Every save syncs its files (sync_files=True, the default of all writers).
The writers take turns within each repeat, each into a fresh directory; the
figures are medians of --repeat runs. Every load goes into zeroed tensors
(integers such as the step set to -1) and is checked bit for bit against the
saved state. Loads read files just
written, so from the page cache, for every writer alike.

--ranks 2 repeats the measurement with two processes on gloo (CPU), each
holding the whole state dict as data parallelism does: DCP's planner spreads
the writing over the ranks, and every rank loads everything. A time there is
from a barrier before the call to a barrier after it (the slower rank).

    target/python-venv/bin/python scripts/bench_dcp.py [--series target/series] [--ranks 1 2] [--json out.json]

(scripts/python-tests.sh makes that environment; pip install zstandard for
the zstd row.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import struct
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

import lmc
import lmc.torch

try:  # torch >= 2.7
    from torch.distributed.checkpoint._extension import ZStandard
except ImportError:  # pragma: no cover
    ZStandard = None  # type: ignore[assignment,misc]

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
    if isinstance(x, int) and not isinstance(x, bool):
        return -1  # so that the check sees whether a non-tensor item (the step) was loaded
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


def live_bytes(path: Path) -> int:
    """dir_bytes less the objects a snapshot store has retired: an add keeps
    the object it replaced for readers still using it (15 minutes), but the
    store no longer counts it."""
    retired = 0
    for manifest in path.rglob("manifest.json"):
        objects = manifest.parent / "objects"
        for r in json.loads(manifest.read_text()).get("retired", []):
            f = objects / r["object"]
            if f.is_file():
                retired += f.stat().st_size
    return dir_bytes(path) - retired


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# safetensors dtype names -> torch (what the series holds, and a few more).
ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: Path) -> dict:
    """A safetensors file's tensors, each in its own storage (as a trained model's are)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = memoryview(raw)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = ST_DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        t = torch.empty(info["shape"], dtype=dtype)
        if b > a:
            t.reshape(-1).view(torch.uint8).copy_(torch.frombuffer(bytearray(data[a:b]), dtype=torch.uint8))
        out[name] = t
    return out


def series_state(series: Path, back: int) -> dict:
    """The checkpoint `back` saves before the newest (0: the newest) of each run of the series."""
    state = {}
    for run in ("pretrain", "finetune"):
        steps = sorted((series / run / "master-fp32").glob("step-*.safetensors"))
        if len(steps) <= back:
            raise SystemExit(f"{series / run}: fewer than {back + 1} checkpoints; run scripts/gen-series.sh")
        name = steps[-1 - back].name
        state[run] = {
            "model": read_safetensors(series / run / "master-fp32" / name),
            "model_bf16": read_safetensors(series / run / "weights-bf16" / name),
            "optim": read_safetensors(series / run / "optim" / name),
            "step": int(name[len("step-") : -len(".safetensors")]),
        }
    return state


def gpt_states(args) -> tuple:
    """(before, after) --more-steps more training steps of a GPT-style model."""
    torch.manual_seed(0)
    model = GPT(args.vocab, args.width, args.layers, args.heads, args.context)
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    train(model, opt, args.steps, args, seed=1)
    first = copy_tree(state_of(model, opt))
    train(model, opt, args.more_steps, args, seed=2)
    return first, copy_tree(state_of(model, opt))


def states(args) -> tuple:
    """(previous, newest) state dicts: the incremental pair; the newest is the one all writers save."""
    if args.source == "series":
        return series_state(args.series, 1), series_state(args.series, 0)
    return gpt_states(args)


def step_labels(args, first, state) -> tuple:
    """The incremental saves' step labels: the series' own steps, or the GPT run's step counts."""
    if args.source == "series":
        return first["pretrain"]["step"], state["pretrain"]["step"]
    return args.steps, args.steps + args.more_steps


def writers() -> list:
    """(name, make writer, make reader) for each writer, plain first (the reference)."""
    out = [("dcp FileSystemWriter", dcp.FileSystemWriter, dcp.FileSystemReader)]
    if ZStandard is not None and ZStandard.is_available():
        # The reader finds the extension from each item's descriptor in .metadata.
        out.append(
            (
                "dcp FileSystemWriter + ZStandard",
                lambda p: dcp.FileSystemWriter(p, _extensions=[ZStandard()]),
                dcp.FileSystemReader,
            )
        )
    out.append(("lmc StorageWriter", lmc.torch.StorageWriter, lmc.torch.StorageReader))
    return out


def zstd_missing() -> str:
    if ZStandard is None:
        return f"torch {torch.__version__} has no torch.distributed.checkpoint._extension.ZStandard (torch >= 2.7)"
    if not ZStandard.is_available():
        return "ZStandard needs the zstandard or pyzstd module: pip install zstandard"
    return ""


def run_all(args, base: Path, first, state, barrier=lambda: None, rank: int = 0, ok_everywhere=lambda ok: ok) -> list:
    """Every writer's save and load of `state`, then lmc's incremental pair; rows for the table.

    With several ranks every rank calls this; `barrier` brackets each timed
    call, rank 0 alone clears directories and measures sizes.
    """
    saved = copy_tree(state)
    kw = {"no_dist": True} if not dist.is_initialized() else {}

    def timed_sync(fn) -> float:
        barrier()
        t = time.perf_counter()
        fn()
        barrier()
        return time.perf_counter() - t

    def fresh(where: Path) -> None:
        if rank == 0:
            shutil.rmtree(where, ignore_errors=True)
        barrier()

    def check(name: str, target, ref) -> None:
        if not ok_everywhere(same_tree(target, ref)):
            raise SystemExit(f"{name}: the loaded state differs from the saved one")

    ws = writers()
    res = {name: {"saves": [], "loads": [], "bytes": 0} for name, _, _ in ws}
    inc_deferred = {"first_saves": [], "first_finishes": [], "saves": [], "finishes": [], "loads": [], "bytes": 0}
    inc_plain = {k: ([] if isinstance(v, list) else v) for k, v in inc_deferred.items()}
    first_step, step = step_labels(args, first, state)
    for r in range(args.repeat):
        for i, (name, make_writer, make_reader) in enumerate(ws):
            where = base / f"{i}-{r}"
            fresh(where)
            res[name]["saves"].append(timed_sync(lambda: dcp.save(state, storage_writer=make_writer(where), **kw)))
            if rank == 0:
                res[name]["bytes"] = dir_bytes(where)
            target = zeros_tree(saved)
            res[name]["loads"].append(timed_sync(lambda: dcp.load(target, storage_reader=make_reader(where), **kw)))
            check(name, target, saved)
            del target
            fresh(where)

        # lmc incremental: the previous checkpoint, then the newest as a
        # delta against it; deferred (the default: the save returns once the
        # newest is stored whole, the previous is re-encoded on another
        # thread, timed apart as "finish") and not (the save does both).
        for defer, inc in ((True, inc_deferred), (False, inc_plain)):
            where = base / f"incremental-{r}"
            fresh(where)
            writer = lambda step: lmc.torch.StorageWriter(where, incremental=True, step=step, defer=defer)
            inc["first_saves"].append(timed_sync(lambda: dcp.save(first, storage_writer=writer(first_step), **kw)))
            inc["first_finishes"].append(timed_sync(lmc.finish_stores))
            before = live_bytes(where) if rank == 0 else 0
            inc["saves"].append(timed_sync(lambda: dcp.save(state, storage_writer=writer(step), **kw)))
            inc["finishes"].append(timed_sync(lmc.finish_stores))
            if rank == 0:
                inc["bytes"] = live_bytes(where) - before
            target = zeros_tree(saved)
            inc["loads"].append(timed_sync(lambda: dcp.load(target, storage_reader=lmc.torch.StorageReader(where), **kw)))
            check("lmc incremental", target, saved)
            del target
            fresh(where)

    rows = [
        {
            "method": name,
            "save_s": statistics.median(v["saves"]),
            "load_s": statistics.median(v["loads"]),
            "bytes": v["bytes"],
            "saves": v["saves"],
            "loads": v["loads"],
        }
        for name, v in res.items()
    ]
    for name, inc in (
        ("lmc incremental (defer=True, the default): newest save, the previous re-encoded after", inc_deferred),
        ("lmc incremental (defer=False): newest save, the previous re-encoded in it", inc_plain),
    ):
        rows.append(
            {
                "method": name,
                "save_s": statistics.median(inc["saves"]),
                "load_s": statistics.median(inc["loads"]),
                "bytes": inc["bytes"],
                "saves": inc["saves"],
                "loads": inc["loads"],
                "first_save_s": statistics.median(inc["first_saves"]),
                "finish_s": statistics.median(inc["finishes"]),
            }
        )
    return rows


def dtype_blind(state, base: Path) -> None:
    """lmc's ratio on the state's tensors with their dtypes, and with the dtypes a stream sees (none).

    A DCP stream extension is handed bytes, not dtypes (docs/PYTHON.md): this
    is what coding them blind (as bytes, or with a guessed element width)
    would cost in size against coding them with their dtypes.
    """
    flat = {}

    def walk(prefix: str, x) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(x, torch.Tensor):
            flat[prefix] = x.contiguous()

    walk("", state)

    def as_u8(t):
        return t.reshape(-1).view(torch.uint8)

    def guess(t, dtype):
        u = as_u8(t)
        return u.view(dtype) if u.numel() % dtype.itemsize == 0 else u

    variants = [
        ("each tensor's dtype", flat),
        ("bytes only (U8)", {k: as_u8(t) for k, t in flat.items()}),
        ("every item taken as float32 (4-byte groups)", {k: guess(t, torch.float32) for k, t in flat.items()}),
        ("every item taken as bfloat16 (2-byte groups)", {k: guess(t, torch.bfloat16) for k, t in flat.items()}),
    ]
    print()
    print(f"lmc.save_file of the state's {len(flat)} tensors, one file:")
    print()
    print("| lmc told | compressed (MB) | ratio |")
    print("| --- | ---: | ---: |")
    for name, tensors in variants:
        path = base / "blind.lmc"
        info = lmc.save_file(tensors, path)
        back = lmc.load_file(path, framework="torch")
        if not all(torch.equal(as_u8(back[k]), as_u8(tensors[k])) for k in tensors):
            raise SystemExit(f"dtype-blind ({name}): the loaded tensors differ")
        path.unlink()
        print(f"| {name} | {info['compressed_len'] / 1e6:.1f} | {info['original_len'] / info['compressed_len']:.3f} |")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, args, base: str, out: str) -> None:
    """One rank of the multi-process run (torch.multiprocessing.spawn)."""
    warnings.filterwarnings("ignore")
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        first, state = states(args)

        def ok_everywhere(ok: bool) -> bool:
            flag = torch.tensor([0 if ok else 1])
            dist.all_reduce(flag)
            return int(flag) == 0

        rows = run_all(args, Path(base), first, state, barrier=dist.barrier, rank=rank, ok_everywhere=ok_everywhere)
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def print_table(rows: list, title: str) -> None:
    ref = rows[0]
    print()
    print(title)
    print()
    print("| writer | on disk (MB) | ratio | save (s) | load (s) | save / plain | load / plain |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['method']} | {row['bytes'] / 1e6:.1f} | {ref['bytes'] / row['bytes']:.2f} | "
            f"{row['save_s']:.2f} | {row['load_s']:.2f} | {row['save_s'] / ref['save_s']:.2f} | "
            f"{row['load_s'] / ref['load_s']:.2f} |"
        )
    print()
    for inc in rows[-2:]:
        print(
            f"{inc['method'].split(':')[0]}: first save (a full snapshot) {inc['first_save_s']:.2f} s; "
            f"after the newest save returned, the re-encoding of the previous one took {inc['finish_s']:.2f} s more "
            "(lmc.finish_stores(); on another thread while training goes on)."
        )
    print(
        "On disk for the incremental rows: what the newest save added to the store once the previous one "
        "is re-encoded (objects it retired, kept a while for readers, not counted)."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=["series", "gpt"], default="series", help="the state dict (see above)")
    ap.add_argument("--series", type=Path, default=Path("target/series"), help="scripts/gen-series.sh's output")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="process counts to run (gloo beyond 1)")
    ap.add_argument("--layers", type=int, default=8, help="--source gpt")
    ap.add_argument("--width", type=int, default=768, help="--source gpt")
    ap.add_argument("--heads", type=int, default=12, help="--source gpt")
    ap.add_argument("--vocab", type=int, default=32000, help="--source gpt")
    ap.add_argument("--context", type=int, default=64, help="--source gpt")
    ap.add_argument("--batch", type=int, default=4, help="--source gpt")
    ap.add_argument("--steps", type=int, default=3, help="--source gpt: training steps before the first save")
    ap.add_argument("--more-steps", type=int, default=2, help="--source gpt: training steps between the two saves")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="--source gpt: model and optimizer dtype")
    ap.add_argument("--blind", action="store_true", help="also lmc's ratio without dtypes (what a stream extension would see)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    t = time.perf_counter()
    first, state = states(args)
    total = tensor_bytes(state)
    what = (
        f"series {args.series}: pretrain step {first['pretrain']['step']} -> {state['pretrain']['step']}, "
        f"finetune step {first['finetune']['step']} -> {state['finetune']['step']}"
        if args.source == "series"
        else f"GPT-style model ({args.dtype}), {args.steps} then {args.steps + args.more_steps} steps"
    )
    print(f"state dict: {total / 1e6:.1f} MB of tensors; {what}; built in {time.perf_counter() - t:.1f} s")
    if zstd_missing():
        print(f"left out: DCP's ZStandard extension ({zstd_missing()})")

    base = Path(args.dir or tempfile.mkdtemp(prefix="bench-dcp-"))
    base.mkdir(parents=True, exist_ok=True)
    report = {}
    for ranks in args.ranks:
        if ranks == 1:
            rows = run_all(args, base, first, state)
        else:
            out = base / "rows.json"
            mp.spawn(rank_main, args=(ranks, free_port(), args, str(base), str(out)), nprocs=ranks, join=True)
            rows = json.loads(out.read_text())
            out.unlink()
        report[ranks] = rows
        title = "one process" if ranks == 1 else f"{ranks} processes on gloo, each holding the whole state dict"
        print_table(rows, f"{title}; medians of {args.repeat}:")
    if args.blind:
        dtype_blind(state, base)
    print()
    print(f"{os.cpu_count()} cores; torch {torch.__version__}; lmc {lmc.__version__}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "source": args.source,
                    "state_bytes": total,
                    "cores": os.cpu_count(),
                    "machine": platform.machine(),
                    "torch": torch.__version__,
                    "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "runs": {str(k): v for k, v in report.items()},
                },
                indent=2,
            )
        )
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
