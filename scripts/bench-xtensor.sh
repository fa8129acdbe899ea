#!/usr/bin/env bash
# Whole-checkpoint-directory measurement of issue 17 (derived tensors):
# `lmc compress DIR` and `lmc decompress` with two lmc binaries, alternating
# run by run so that both see the same machine load, plus zstd -3 on a tar
# of the same files. Prints one row per directory and binary: ratio, and
# the median wall times (seconds) of RUNS compressions and decompressions.
# The new binary's output is checked against the directory byte for byte.
#
# Usage: scripts/bench-xtensor.sh BEFORE_LMC AFTER_LMC RUNS DIR...
# e.g.   scripts/bench-xtensor.sh target/base/release/lmc target/release/lmc 5 target/bench/*
set -euo pipefail
before=$1 after=$2 runs=$3; shift 3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lmc-bench-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

printf '%-28s %-8s %12s %12s %7s %10s %10s %9s %9s\n' dir method original stored ratio "comp s" "decomp s" "comp MB/s" "dec MB/s"
for dir in "$@"; do
  name=$(basename "$dir")
  orig=$(cat "$dir"/* | wc -c)
  declare -A ct=() dt=() size=()
  for ((r = 0; r < runs; r++)); do
    for tag in before after; do
      bin=${!tag}
      rm -rf "$tmp/out" "$tmp/c.lmc"
      t0=$(now); "$bin" -q compress "$dir" -o "$tmp/c.lmc"; t1=$(now)
      "$bin" -q decompress "$tmp/c.lmc" -o "$tmp/out"; t2=$(now)
      ct[$tag]+="$(echo "$t1 - $t0" | bc) "
      dt[$tag]+="$(echo "$t2 - $t1" | bc) "
      size[$tag]=$(stat -c %s "$tmp/c.lmc")
      if [ "$tag" = after ] && [ "$r" = 0 ]; then
        diff -r "$dir" "$tmp/out" >/dev/null || { echo "$name: the restored directory differs" >&2; exit 1; }
      fi
    done
  done
  zc="" zd=""
  for ((r = 0; r < runs; r++)); do
    t0=$(now); tar -cf - -C "$dir" . | zstd -3 -q -c > "$tmp/z.zst"; t1=$(now)
    zstd -d -q -c "$tmp/z.zst" > /dev/null; t2=$(now)
    zc+="$(echo "$t1 - $t0" | bc) "; zd+="$(echo "$t2 - $t1" | bc) "
  done
  zsize=$(stat -c %s "$tmp/z.zst")
  row() { # method size comp-times decomp-times
    local c d
    c=$(tr ' ' '\n' <<<"$3" | grep . | median)
    d=$(tr ' ' '\n' <<<"$4" | grep . | median)
    printf '%-28s %-8s %12d %12d %7.3f %10.3f %10.3f %9.0f %9.0f\n' "$name" "$1" "$orig" "$2" \
      "$(echo "$orig / $2" | bc -l)" "$c" "$d" "$(echo "$orig / $c / 1000000" | bc -l)" "$(echo "$orig / $d / 1000000" | bc -l)"
  }
  row before "${size[before]}" "${ct[before]}" "${dt[before]}"
  row after "${size[after]}" "${ct[after]}" "${dt[after]}"
  row zstd-3 "$zsize" "$zc" "$zd"
  unset ct dt size
done
