#!/usr/bin/env bash
# Makes this fixture: a snapshot store written by lmc from before reverse
# deltas (commit d691737, keyframes every 4, each other snapshot a delta
# against the one before; then pruned, so its manifest is version 2 and
# lists retired objects), and the checkpoints it holds, to check that
# today's lmc restores, extends and converts such a store byte for byte.
# Usage: make.sh OLD_LMC   (run in this directory)
set -euo pipefail
lmc=$1
rm -rf inputs store
mkdir inputs
python3 - <<'PY'
import json, random, struct
random.seed(7)
n = 3000
w = [random.gauss(0, 0.02) for _ in range(n)]
for k in range(1, 8):
    step = 10 * k
    f32 = struct.pack(f"<{n}f", *w)
    bf16 = b"".join(struct.pack("<f", x)[2:] for x in w)
    header = {
        "__metadata__": {"step": str(step)},
        "master": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
        "model": {"dtype": "BF16", "shape": [n], "data_offsets": [4 * n, 6 * n]},
    }
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(f"inputs/step-{step:03}.safetensors", "wb") as out:
        out.write(struct.pack("<Q", len(h)) + h + f32 + bf16)
    w = [x + random.gauss(0, 1e-4) if random.random() < 0.3 else x for x in w]
PY
for f in inputs/step-*.safetensors; do
  "$lmc" -q snapshot add --keyframe-every 4 store "$f"
done
"$lmc" -q snapshot prune store --keep-last 6
rm -f store/lock
