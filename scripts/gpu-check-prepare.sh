#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU node that has no Rust toolchain, no libhdf5
# and no MPI (the lent GPU machines): stripped release binaries (multimat, multimat-screen) and the shared libraries it links
# that are not part of a base Ubuntu/Debian system, under .gpu-check/ (ignored by git; ≈ 20 MB, so
# it fits the 64 MiB that may travel with a working tree). Run it here, then carry .gpu-check.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.gpu-check
CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --bin multimat --bin multimat-screen
rm -rf "$OUT" && mkdir -p "$OUT/bin" "$OUT/lib"
for b in multimat multimat-screen; do
    cp "target/release/$b" "$OUT/bin/$b"
    strip "$OUT/bin/$b"
done
# Every library the binaries resolve here, except the C/C++ runtime every Linux has.
ldd "$OUT/bin/multimat" "$OUT/bin/multimat-screen" | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
        *) cp -L "$lib" "$OUT/lib/" ;;
    esac
done
du -sh "$OUT" | awk '{print "prepared " $2 ": " $1 " (binary + linked libraries)"}'
ls "$OUT/lib"
