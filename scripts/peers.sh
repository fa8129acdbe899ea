#!/usr/bin/env bash
# Measures the specialised float compressors (ZipNN, OpenZL, python-blosc2)
# beside lmc on the same bytes: see scripts/peers.py. Makes a virtual
# environment in target/peers-venv with the versions these tables were
# measured with (zipnn pulls in torch: a few GB, once), builds lmc, and passes
# its arguments on:
#
#   ./scripts/peers.sh target/testdata/minilm/model.safetensors [--json out.json]
#   ./scripts/peers.sh new.safetensors --base old.safetensors
#
# A package that fails to install is reported here and, as "not installed",
# in the table; it does not stop the others.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/peers-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
for spec in numpy:numpy safetensors:safetensors zipnn:zipnn==0.5.4 openzl:openzl==0.3.0 blosc2:blosc2==4.14.1; do
  mod=${spec%%:*} pkg=${spec#*:}
  if ! "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)"; then
    "$venv/bin/python" -m pip install --quiet "$pkg" ||
      echo "peers.sh: pip install $pkg failed; peers.py reports $mod as not installed" >&2
  fi
done
cargo build --release --quiet -p lmc-cli
exec "$venv/bin/python" scripts/peers.py "$@"
