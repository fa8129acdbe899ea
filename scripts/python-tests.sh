#!/usr/bin/env bash
# Builds the Python package (crates/lmc-py, an abi3 wheel made by maturin),
# installs it into a virtual environment with PyTorch on the CPU, and runs
# its tests (crates/lmc-py/tests: files, snapshot stores, and Distributed
# Checkpoint with two processes). Needs only Python 3.9+, the Rust
# toolchain and PyPI; .ci/run calls it after the Rust tests.
#
#   scripts/python-tests.sh                 # everything
#   scripts/python-tests.sh -k dcp -x       # arguments go to pytest
#
# The environment is target/python-venv (made once, refreshed when
# crates/lmc-py/requirements-ci.txt changes); the wheel goes to
# target/wheels, its build to target/lmc-py. The CLI tests use
# target/debug/lmc (built by `cargo test`), else build it, or $LMC_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=target/python-venv
py=$venv/bin/python
req=crates/lmc-py/requirements-ci.txt
torch_version=2.15.0
stamp=$venv/.requirements-$(sha256sum "$req" | cut -c1-16)-torch-$torch_version

t0=$SECONDS
if [ ! -e "$stamp" ]; then
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps "torch==$torch_version"
  # torch declares CUDA packages we leave out on purpose (see $req): no warning about them.
  "$py" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts -r "$req"
  touch "$stamp"
fi
t1=$SECONDS
echo "python-tests: environment ready in $((t1 - t0)) s ($venv)"

rm -rf target/wheels
# Not --locked: crates/lmc-py has its own Cargo.lock (it is outside the
# workspace), which cargo brings up to date if a library crate gained a
# dependency since; commit the change.
CARGO_TARGET_DIR=$root/target/lmc-py "$venv/bin/maturin" build --release \
  --manifest-path crates/lmc-py/Cargo.toml --out target/wheels --interpreter "$py" --quiet
"$py" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall target/wheels/lmc-*.whl
t2=$SECONDS
echo "python-tests: wheel built and installed in $((t2 - t1)) s ($(ls target/wheels))"

if [ -z "${LMC_BIN:-}" ]; then
  if [ ! -x target/debug/lmc ]; then
    cargo build --locked --quiet -p lmc-cli
  fi
  export LMC_BIN=$root/target/debug/lmc
fi

# From crates/lmc-py, for pyproject.toml's pytest settings; `import lmc`
# finds the installed wheel (the sources, under python/, lack the native module).
cd crates/lmc-py
"$root/$py" -m pytest -p no:cacheprovider -q tests "$@"
echo "python-tests: tests ran in $((SECONDS - t2)) s; whole script $SECONDS s"
