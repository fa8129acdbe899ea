#!/usr/bin/env bash
# A local S3-compatible server for the object-storage tests
# (crates/lmc-cli/tests/s3.rs): moto_server, from the PyPI package
# moto[server], in a virtual environment under target/ (made once).
#
#   eval "$(scripts/s3-server.sh start)"   # starts it; exports LMC_TEST_S3_ENDPOINT and LMC_S3_PID
#   cargo test -p lmc-cli --test s3
#   kill "$LMC_S3_PID"
#
# The server listens on 127.0.0.1 only, on a free port, and keeps
# everything in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/s3-venv
moto_version=5.1.22
stamp=$venv/.moto-$moto_version
if [ ! -e "$stamp" ]; then
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version" >&2
  touch "$stamp"
fi
case "${1:-}" in
  start) ;;
  *) echo "usage: eval \"\$($0 start)\"" >&2; exit 2 ;;
esac
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=target/s3-server.log
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; then
    echo "export LMC_TEST_S3_ENDPOINT=http://127.0.0.1:$port LMC_S3_PID=$pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "s3-server: moto_server exited; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "s3-server: moto_server did not answer on port $port within 20 s" >&2
kill "$pid"
exit 1
