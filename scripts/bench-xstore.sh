#!/usr/bin/env bash
# Snapshot-store measurement of issue 17 across files (derived tensors
# between the files of one directory snapshot): a series of checkpoint
# directories (one per step, each with the BF16 weights, fp32 master and
# optimizer files) added to a fresh store with each of two lmc binaries.
# Prints per series and binary: the store's size (its objects), the time
# of all the adds, the median wall time of RUNS restores of the newest
# snapshot (the two binaries alternating run by run), and whether every
# snapshot restores byte-identical (diff -r against its directory).
#
# Usage: scripts/bench-xstore.sh BEFORE_LMC AFTER_LMC RUNS SERIES_DIR...
# where each SERIES_DIR holds one directory per step, named step-NNNNNN.
set -euo pipefail
before=$1 after=$2 runs=$3; shift 3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lmc-xstore-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

printf '%-12s %-7s %6s %12s %12s %7s %8s %10s %10s\n' series method steps original stored ratio "add s" "restore s" identical
for series in "$@"; do
  name=$(basename "$series")
  steps=$(ls "$series")
  last=$(ls "$series" | tail -1)
  orig=$(cat "$series"/*/* | wc -c)
  declare -A add=() size=() same=() rt=()
  for tag in before after; do
    bin=${!tag}
    store=$tmp/$tag.lmcstore
    rm -rf "$store"
    t0=$(now)
    for s in $steps; do
      "$bin" -q snapshot add "$store" "$series/$s" --step $((10#${s#step-}))
    done
    t1=$(now)
    add[$tag]=$(echo "$t1 - $t0" | bc)
    size[$tag]=$(du -sb "$store/objects" | cut -f1)
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
    printf '%-12s %-7s %6d %12d %12d %7.3f %8.2f %10.3f %10s\n' "$name" "$tag" "$(wc -w <<<"$steps")" "$orig" \
      "${size[$tag]}" "$(echo "$orig / ${size[$tag]}" | bc -l)" "${add[$tag]}" "$r" "${same[$tag]}"
  done
  unset add size same rt
done
