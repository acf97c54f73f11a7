#!/usr/bin/env bash
# multimat-screen vs faiss-cpu IndexFlatIP, same random data, same thread count (not asserted).
#
#   benches/screen_vs_faiss.sh                                  # all three sizes
#   benches/screen_vs_faiss.sh --sizes 16000x62000              # just the small one
#   benches/screen_vs_faiss.sh --threads 2 --extra "--block-queries 512"
#
# Creates .cache/bench-venv (faiss-cpu, numpy, h5py from PyPI) once, builds the release binary,
# writes random data under .cache/bench-data (2.2M x 128 floats = 1.1 GB), then runs
# benches/screen_vs_faiss.py, which prints the table. See that file for what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
# PYTHON=path: an interpreter that already has numpy, h5py (and faiss-cpu, else faiss is
# skipped with a message); BIN=path: an already built multimat-screen (the test suite's smoke run
# sets both and tiny --sizes).
VENV=.cache/bench-venv
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
else
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import faiss, numpy, h5py" 2>/dev/null; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet faiss-cpu numpy h5py
    fi
    PY="$VENV/bin/python"
fi
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin multimat-screen
    BIN=target/release/multimat-screen
fi
exec "$PY" benches/screen_vs_faiss.py --bin "$BIN" "$@"
