#!/usr/bin/env bash
# The test suite: everything a user would run to trust a build. Needs ./scripts/bootstrap.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export MULTIMAT_PYTHON="$(pwd)/.cache/venv/bin/python"
cargo test --all-targets --no-fail-fast 2>&1
