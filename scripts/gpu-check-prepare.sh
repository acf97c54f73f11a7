#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU node that has no Rust toolchain, no libhdf5
# and no MPI (the lent GPU machines): a stripped release binary and the shared libraries it links
# that are not part of a base Ubuntu/Debian system, under .gpu-check/ (ignored by git; ≈ 20 MB, so
# it fits the 64 MiB that may travel with a working tree). Run it here, then carry .gpu-check.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.gpu-check
CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --bin multimat
rm -rf "$OUT" && mkdir -p "$OUT/bin" "$OUT/lib"
cp target/release/multimat "$OUT/bin/multimat"
strip "$OUT/bin/multimat"
# Every library the binary resolves here, except the C/C++ runtime every Linux has.
ldd "$OUT/bin/multimat" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
        *) cp -L "$lib" "$OUT/lib/" ;;
    esac
done
du -sh "$OUT" | awk '{print "prepared " $2 ": " $1 " (binary + linked libraries)"}'
ls "$OUT/lib"
