#!/usr/bin/env bash
# A fuzzing campaign over every reader (tests/fuzz_readers.rs): SECONDS_PER_TARGET seconds of
# mutated real files per target (default 60), seed SEED (default: a new one each run, printed).
# Failing inputs are written to target/fuzz-failures/ and replay with
#   MULTIMAT_FUZZ_REPLAY=<target>:<seed>:<iteration> cargo test --release --test fuzz_readers
# Reduce a failing input by hand to a small file of your own, add it to tests/fuzz-corpus/<target>/
# (never a copy of ../shared/data), and fix the class. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
seed="${2:-$(date +%s)}"
echo "fuzz campaign: ${seconds} s per target, seed ${seed}"
MULTIMAT_FUZZ_SECONDS="$seconds" MULTIMAT_FUZZ_SEED="$seed" \
    cargo test --release --test fuzz_readers every_reader -- --nocapture
