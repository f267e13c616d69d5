#!/usr/bin/env bash
# Builds the GPU test and benchmark programs (and saker) here and packs them for a GPU machine that
# lacks the build dependencies: OUTDIR/bin holds the stripped executables, OUTDIR/lib the shared
# libraries they need that are neither part of the base system (glibc, libstdc++) nor CUDA's
# (libcudart, libcublasLt, libnccl: large, and present on the GPU machine; scripts/bench/gpu.sh
# finds them there). Then, on the GPU machine, from a checkout of this tree:
#   scripts/bench/gpu.sh --prebuilt OUTDIR
# Usage: scripts/bench/gpu_pack.sh OUTDIR   (build directory: $SAKER_BUILD_DIR, default build-cuda)
set -euo pipefail
out=${1:?usage: scripts/bench/gpu_pack.sh OUTDIR}
cd "$(dirname "$0")/../.."
build=${SAKER_BUILD_DIR:-build-cuda}
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --parallel "${SAKER_JOBS:-2}" --target saker_gpu_tests saker_gpu_bench saker

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
exes=("$build/tests/gpu/saker_gpu_tests" "$build/scripts/bench/saker_gpu_bench" "$build/saker")
for exe in "${exes[@]}"; do
  cp "$exe" "$out/bin/"
  strip "$out/bin/$(basename "$exe")"
done

# Libraries the GPU machine has itself: the C and C++ runtimes, zlib and udev (older here than on
# Ubuntu 24.04, so its own are compatible) and the CUDA ones.
system='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libutil|libgcc_s|libstdc\+\+|libz|libudev|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia)\.'
for exe in "${exes[@]}"; do
  ldd "$exe" | awk '/=>/ { print $1, $3 }' | while read -r name path; do
    [[ "$name" =~ $system ]] && continue
    [ -f "$path" ] || { echo "gpu_pack: $exe needs $name, not found here" >&2; exit 1; }
    [ -f "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
  done
done
strip --strip-unneeded "$out"/lib/* 2>/dev/null || true

cat > "$out/README.txt" <<'TXT'
Prebuilt saker GPU programs. On the GPU machine, from the saker checkout (tests/fixtures is read
from there):  scripts/bench/gpu.sh --prebuilt THIS_DIR [--out RESULTS_DIR]
TXT
echo "gpu_pack: $(du -sh "$out" | cut -f1) in $out"
ls -l "$out/bin" "$out/lib"
