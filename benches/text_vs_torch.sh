#!/usr/bin/env bash
# multimat's frozen BERT forward vs PyTorch/transformers on the same token ids, same machine,
# same run: MiniLM-L6 (the real checkpoint) and a BERT-base-sized random model, sequence length 512.
#
#   benches/text_vs_torch.sh [extra args for `multimat bench text`, e.g. --base-texts 8]
#
# Builds .cache/bench-venv with torch and transformers from PyPI on first use (PyPI's Linux torch
# wheel pulls the CUDA libraries: ≈ 4 GB; the CPU-only index is not reachable from every machine).
# PROFILE=release uses a release build of multimat (the default dev profile compiles our code at
# opt-level 1 and dependencies at 3); BIN=path uses an already built binary. SKIP_TORCH=1 measures
# and tabulates multimat's side only, with any python3 (the test suite's smoke run: PyPI's torch
# wheel pulls ≈ 4 GB of CUDA libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/bench-venv
PROFILE=${PROFILE:-dev}

if [ -z "${SKIP_TORCH:-}" ] && ! "$VENV/bin/python" -c "import torch, transformers" 2>/dev/null; then
    echo "building $VENV (torch + transformers from PyPI) ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet torch transformers
fi

if [ -n "${BIN:-}" ]; then
    echo "using $BIN as built" >&2
elif [ "$PROFILE" = release ]; then
    cargo build --release --bin multimat
    BIN=target/release/multimat
else
    cargo build --bin multimat
    BIN=target/debug/multimat
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" bench text --inputs-out "$WORK/inputs.json" --json-out "$WORK/ours.json" "$@"
echo
if [ -n "${SKIP_TORCH:-}" ]; then
    "${PYTHON:-python3}" - "$WORK/ours.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
print(f"{'model':<52} {'multimat texts/s':>17} {'RSS ours':>9}")
for stage in ours["stages"]:
    print(f"{stage['name']:<52} {stage['texts_per_s']:>17.2f} {stage['peak_rss_mib']:>6.0f} MiB")
print("(PyTorch peer skipped: SKIP_TORCH=1)")
PY
    exit 0
fi
echo "PyTorch $("$VENV/bin/python" -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())'), transformers $("$VENV/bin/python" -c 'import transformers; print(transformers.__version__)')"
# One process per model so each peak RSS is that model's alone.
"$VENV/bin/python" benches/text_torch.py "$WORK/inputs.json" minilm > "$WORK/torch_minilm.json"
"$VENV/bin/python" benches/text_torch.py "$WORK/inputs.json" base > "$WORK/torch_base.json"

"$VENV/bin/python" - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
ours = json.load(open(f"{work}/ours.json"))
torch_runs = [json.load(open(f"{work}/torch_{m}.json")) for m in ("minilm", "base")]
print(f"{'model':<52} {'multimat texts/s':>17} {'torch texts/s':>14} {'ratio':>7} {'RSS ours':>9} {'RSS torch':>10}")
for stage, t in zip(ours["stages"], torch_runs):
    ratio = stage["texts_per_s"] / t["texts_per_s"]
    print(f"{stage['name']:<52} {stage['texts_per_s']:>17.2f} {t['texts_per_s']:>14.2f} {ratio:>6.2f}x "
          f"{stage['peak_rss_mib']:>6.0f} MiB {t['peak_rss_mib']:>6.0f} MiB")
print("ratio = multimat texts/s ÷ PyTorch texts/s (> 1: multimat faster)")
PY
