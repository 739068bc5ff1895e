#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (libzmq for the
# `zmq` crate, the Python interop clients), then `cargo test --workspace`.
#
#   scripts/test.sh          install dependencies, then run every test
#   scripts/test.sh setup    only install dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

setup() {
    if ! pkg-config --exists libzmq 2>/dev/null; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libzmq3-dev pkg-config >/dev/null
    fi
    python3 -m pip install -q --disable-pip-version-check -r tests/interop/requirements.txt
}

setup
if [ "${1:-}" = "setup" ]; then
    exit 0
fi
exec cargo test --workspace
