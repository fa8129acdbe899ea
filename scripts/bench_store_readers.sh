#!/usr/bin/env bash
# Restore speed of a store's snapshot with and without a writer adding to the
# same store at the same time (issue 19's target). One thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
L=${L:-$PWD/target/release/lmc}
W=$(mktemp -d /tmp/rdw.XXXX)
M=${M:-target/testdata/minilm/model.safetensors}  # fetched by `cargo test`
python3 - "$M" "$W" <<'PY'
import sys, struct, json, random
src, out = sys.argv[1], sys.argv[2]
b = open(src, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
hdr, data = b[:8+n], bytearray(b[8+n:])
rng = random.Random(1)
for step in range(1, 13):
    # a few low bits change between steps (a fine-tuning-like drift; test data, not a ratio claim)
    for _ in range(20000):
        i = rng.randrange(0, len(data) // 4) * 4
        data[i] ^= rng.randrange(1, 16)
    open(f"{out}/step-{step:03d}.safetensors", 'wb').write(hdr + data)
PY
for s in 1 2 3 4; do $L -q -t 1 snapshot add $W/store $W/step-00$s.safetensors --step $s; done
time_restore() {
  local t0 t1
  t0=$(date +%s.%N); $L -q -t 1 snapshot restore $W/store 4 -o $W/out.safetensors --force; t1=$(date +%s.%N)
  cmp -s $W/out.safetensors $W/step-004.safetensors || { echo "restore differs"; exit 1; }
  python3 -c "print(round($t1 - $t0, 3))"
}
echo "idle:"; idle=(); for i in 1 2 3 4 5 6 7; do idle+=($(time_restore)); done; printf '%s\n' "${idle[@]}" | sort -n | sed -n 4p
( for s in 5 6 7 8 9 10 11 12; do $L -q -t 1 snapshot add $W/store $W/step-$(printf %03d $s).safetensors --step $s --wait=60; done ) &
wp=$!
echo "during adds:"; busy=(); for i in 1 2 3 4 5 6 7; do busy+=($(time_restore)); done; printf '%s\n' "${busy[@]}" | sort -n | sed -n 4p
wait $wp
echo "writer done; store:"; $L snapshot list $W/store | tail -3
rm -rf "$W"
