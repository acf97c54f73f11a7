#!/usr/bin/env bash
# The test suite: everything a user would run to trust a build. Needs ./scripts/bootstrap.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Slurm tests need Slurm + munge, which the plain bootstrap leaves out (idempotent: quick
# when everything is there).
./scripts/bootstrap.sh --with-slurm
export MULTIMAT_PYTHON="$(pwd)/.cache/venv/bin/python"
# NVRTC from ./scripts/bootstrap.sh: the kernel compilation tests load it (and fail, saying so, without it).
export MULTIMAT_NVRTC_LIB="${MULTIMAT_NVRTC_LIB:-$(pwd)/.cache/nvrtc/lib/libnvrtc.so.13}"
cargo test --all-targets --no-fail-fast 2>&1
