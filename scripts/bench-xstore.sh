#!/usr/bin/env bash
# Snapshot-store measurement of issue 17 across files (derived tensors
# between the files of one directory snapshot): a series of checkpoint
# directories (one per step, each with the BF16 weights, fp32 master and
# optimizer files) added to a fresh store with each of two lmc binaries.
# Prints per series and binary: the store's size (the objects its manifest
# names, as `lmc snapshot list` counts them) and the BF16 weights files'
# part of it, the median wall time of RUNS builds of the whole store (all
# the adds) and of RUNS restores of the newest snapshot (the two binaries
# alternating run by run), and whether every
# snapshot restores byte-identical (diff -r against its directory).
#
# Usage: scripts/bench-xstore.sh BEFORE_LMC AFTER_LMC RUNS SERIES_DIR...
# where each SERIES_DIR holds one directory per step, named step-NNNNNN.
set -euo pipefail
before=$1 after=$2 runs=$3; shift 3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lmc-xstore-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
# Bytes of the objects the manifest names: all of them, or those of one path.
stored() {
  python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(sum(f["stored"] for s in m["snapshots"] for f in s["files"] if len(sys.argv) < 3 or f["path"] == sys.argv[2]))' "$@"
}
# Retired objects are deleted at once (not kept 15 minutes for readers).
export LMC_STORE_RETIRE_GRACE=0
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

printf '%-12s %-7s %6s %12s %12s %7s %12s %8s %10s %10s\n' series method steps original stored ratio "bf16 stored" "add s" "restore s" identical
for series in "$@"; do
  name=$(basename "$series")
  steps=$(ls "$series")
  last=$(ls "$series" | tail -1)
  orig=$(cat "$series"/*/* | wc -c)
  declare -A add=() size=() bf16=() same=() rt=()
  for ((r = 0; r < runs; r++)); do
    for tag in before after; do
      bin=${!tag}
      store=$tmp/$tag.lmcstore
      rm -rf "$store"
      t0=$(now)
      for s in $steps; do
        "$bin" -q snapshot add "$store" "$series/$s" --step $((10#${s#step-}))
      done
      t1=$(now)
      add[$tag]+="$(echo "$t1 - $t0" | bc) "
    done
  done
  for tag in before after; do
    bin=${!tag}
    store=$tmp/$tag.lmcstore
    size[$tag]=$(stored "$store/manifest.json")
    bf16[$tag]=$(stored "$store/manifest.json" weights-bf16.safetensors)
    same[$tag]=yes
    for s in $steps; do
      rm -rf "$tmp/out"
      "$bin" -q snapshot restore "$store" $((10#${s#step-})) -o "$tmp/out"
      diff -r "$series/$s" "$tmp/out" >/dev/null || same[$tag]=NO
    done
  done
  for ((r = 0; r < runs; r++)); do
    for tag in before after; do
      bin=${!tag}
      rm -rf "$tmp/out"
      t0=$(now); "$bin" -q snapshot restore "$tmp/$tag.lmcstore" $((10#${last#step-})) -o "$tmp/out"; t1=$(now)
      rt[$tag]+="$(echo "$t1 - $t0" | bc) "
    done
  done
  for tag in before after; do
    r=$(tr ' ' '\n' <<<"${rt[$tag]}" | grep . | median)
    a=$(tr ' ' '\n' <<<"${add[$tag]}" | grep . | median)
    printf '%-12s %-7s %6d %12d %12d %7.3f %12d %8.2f %10.3f %10s\n' "$name" "$tag" "$(wc -w <<<"$steps")" "$orig" \
      "${size[$tag]}" "$(echo "$orig / ${size[$tag]}" | bc -l)" "${bf16[$tag]}" "$a" "$r" "${same[$tag]}"
  done
  unset add size bf16 same rt
done
