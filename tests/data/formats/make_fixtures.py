#!/usr/bin/env python3
"""Writes the checkpoint fixtures under tests/data/formats/ with real PyTorch,
NumPy and safetensors. Run once; the outputs are committed and never
regenerated (the tests check their lengths). Made with torch 2.15.0,
numpy 2.4.6, safetensors 0.8.0 on x86-64 Linux:

    python3 -m venv /tmp/v && /tmp/v/bin/pip install torch numpy safetensors
    /tmp/v/bin/python tests/data/formats/make_fixtures.py
"""
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)
rng = np.random.default_rng(0)


class Tiny(torch.nn.Module):
    """An embedding, two linear layers with a norm between: 41,152 parameters."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(96, 64)
        self.blocks = torch.nn.ModuleList(
            [torch.nn.Linear(64, 128), torch.nn.LayerNorm(128), torch.nn.Linear(128, 96)]
        )

    def forward(self, ids):
        x = self.embed(ids).mean(1)
        for b in self.blocks:
            x = b(x)
        return x


def train(model, steps=20):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(steps):
        ids = torch.randint(0, 96, (16, 8))
        loss = torch.nn.functional.cross_entropy(model(ids), ids[:, 0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


model = Tiny()
opt = train(model)
sd = model.state_dict()
w = sd["blocks.0.weight"]

# A training checkpoint: fp32 weights and AdamW state, a bf16 copy of the
# weights, views that share storages, nested dicts and lists of other dtypes.
checkpoint = {
    "model": sd,
    "model_bf16": {k: v.to(torch.bfloat16) for k, v in sd.items()},
    "optimizer": opt.state_dict(),
    "step": 20,
    "config": {"hidden": [64, 128], "name": "tiny", "lr": 1e-3},
    "views": {"row0": w[0], "tail": w.view(-1)[4096:], "t": w.t()},
    "extra": [
        torch.arange(10, dtype=torch.int64),
        torch.tensor([True, False, True]),
        (torch.randn(7).half(), torch.randint(-100, 100, (5,), dtype=torch.int8)),
        torch.zeros(0),
        torch.tensor(3.5),
    ],
}
torch.save(checkpoint, os.path.join(HERE, "tiny_adamw.pt"))

# The same fp32 weights in the legacy (pre-1.6) format.
torch.save(sd, os.path.join(HERE, "tiny_legacy.pt"), _use_new_zipfile_serialization=False)


# A pickle that calls a function when loaded: os.system. lmc must never run it.
class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED-by-lmc-fixture",))


torch.save({"w": torch.randn(64), "evil": Evil()}, os.path.join(HERE, "calls_os_system.pt"))

# NumPy: several dtypes, Fortran order, 0-d, and archives stored and deflated.
npy = os.path.join(HERE, "npy")
os.makedirs(npy, exist_ok=True)
arrays = {
    "f32": rng.standard_normal((32, 48)).astype("<f4"),
    "f16": rng.standard_normal(300).astype("<f2"),
    "f64": rng.standard_normal((10, 10)),
    "i8": rng.integers(-128, 127, 100, dtype=np.int8),
    "i64": rng.integers(0, 1 << 40, 50, dtype=np.int64),
    "u16": rng.integers(0, 1 << 16, 64, dtype=np.uint16),
    "bool": rng.integers(0, 2, 33).astype(bool),
    "c64": (rng.standard_normal(20) + 1j * rng.standard_normal(20)).astype(np.complex64),
    "fortran": np.asfortranarray(rng.standard_normal((16, 24)).astype("<f4")),
    "scalar": np.array(2.5, dtype=np.float64),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "big_endian": rng.standard_normal(40).astype(">f4"),
    "text": np.array(["alpha", "beta"]),
}
for name, a in arrays.items():
    np.save(os.path.join(npy, name + ".npy"), a)
np.savez(os.path.join(npy, "stored.npz"), **{k: arrays[k] for k in ["f32", "i64", "fortran", "scalar"]})
np.savez_compressed(os.path.join(npy, "deflated.npz"), **{k: arrays[k] for k in ["f32", "f16"]})

# A sharded Hugging Face checkpoint directory.
hf = os.path.join(HERE, "sharded")
shutil.rmtree(hf, ignore_errors=True)
os.makedirs(hf)
big = Tiny()
train(big, 5)
tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in big.state_dict().items()}
names = sorted(tensors)
shards = [names[: len(names) // 2], names[len(names) // 2 :]]
weight_map = {}
for i, part in enumerate(shards):
    fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file({k: tensors[k] for k in part}, os.path.join(hf, fname), metadata={"format": "pt"})
    weight_map.update({k: fname for k in part})
total = sum(t.numel() * t.element_size() for t in tensors.values())
with open(os.path.join(hf, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
with open(os.path.join(hf, "config.json"), "w") as f:
    json.dump({"architectures": ["Tiny"], "hidden_size": 64, "vocab_size": 96, "torch_dtype": "bfloat16"}, f, indent=2)
with open(os.path.join(hf, "generation_config.json"), "w") as f:
    json.dump({"max_new_tokens": 32}, f)
vocab = {f"tok{i}": i for i in range(96)}
with open(os.path.join(hf, "tokenizer.json"), "w") as f:
    json.dump({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "tok0"}}, f)
with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
    json.dump({"model_max_length": 512}, f)
os.makedirs(os.path.join(hf, "training"))
torch.save(train(big, 1).state_dict(), os.path.join(hf, "training", "optimizer.pt"))
np.save(os.path.join(hf, "training", "rng_state.npy"), rng.integers(0, 1 << 32, 16, dtype=np.uint32))
with open(os.path.join(hf, "README.md"), "w") as f:
    f.write("# tiny\nA test checkpoint written by make_fixtures.py.\n")

# Dtypes without a legacy storage type: saved as untyped storages with the
# dtype in _rebuild_tensor_v3's arguments; complex numbers.
torch.save(
    {
        "u16": torch.arange(1000).to(torch.uint16),
        "f8": torch.randn(1000).to(torch.float8_e4m3fn),
        "u32": torch.arange(10).to(torch.uint32),
        "cf": torch.randn(8, dtype=torch.complex64),
    },
    os.path.join(HERE, "new_dtypes.pt"),
)

for root, _, files in sorted(os.walk(HERE)):
    for fn in sorted(files):
        p = os.path.join(root, fn)
        print(f"{os.path.getsize(p):>9} {os.path.relpath(p, HERE)}")
