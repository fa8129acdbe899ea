#!/usr/bin/env bash
# Reproduces the tables in docs/BENCHMARKS.md and the README: lmc beside
# zstd -3 and memcpy on MiniLM-L6 (fp32) and its BF16 copy, at 1 and 2
# threads, and lmc's ratio and speed across chunk sizes. Run ./scripts/demo.sh
# first (it fetches the data). RUNS=n sets the repetitions (default 9);
# FULL=1 adds every baseline (zstd -1/-3/-19, xz, bzip2, lz4, brotli).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p lmc-cli
lmc=target/release/lmc
dir=target/testdata/minilm
runs=${RUNS:-9}
[ -f "$dir/model-bf16.safetensors" ] || { echo "run ./scripts/demo.sh first" >&2; exit 1; }

echo "## lmc beside zstd -3 and memcpy (median of $runs runs, in memory)"
for f in model-bf16 model; do
  for t in 1 2; do
    echo
    "$lmc" bench "$dir/$f.safetensors" --threads "$t" --runs "$runs" --methods lmc,zstd-3,memcpy
  done
done

if [ -n "${FULL:-}" ]; then
  echo
  echo "## Every baseline, raw and byte-grouped (1 thread; slow methods stop repeating after 3 s)"
  for f in model-bf16 model; do
    echo
    "$lmc" bench "$dir/$f.safetensors" --threads 1 --runs "$runs"
  done
fi

echo
echo "## Chunk size (1 thread, median of $runs runs, in memory)"
echo
echo "| file | chunk | ratio | compress MB/s | decompress MB/s |"
echo "|---|---|---|---|---|"
for f in model-bf16 model; do
  for cs in 64K 256K 1M 4M; do
    "$lmc" bench "$dir/$f.safetensors" --threads 1 --runs "$runs" --chunk-size "$cs" --methods lmc --json |
      python3 -c "
import json, sys
d = json.load(sys.stdin)
r = [x for x in d['results'] if x['method'] == 'lmc'][0]
print(f\"| $f | $cs | {r['ratio']:.4f} | {r['compress_mb_per_s']:.0f} | {r['decompress_mb_per_s']:.0f} |\")"
  done
done
