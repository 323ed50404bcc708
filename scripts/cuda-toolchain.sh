#!/usr/bin/env bash
# Installs NVIDIA's CUDA compiler from PyPI into the repository's build area, for `make build-cuda`
# and `make check-cuda`. No CUDA toolkit, root or system change is needed: the five wheels below
# (nvcc, the runtime headers and libcudart, the CRT headers, CCCL and NVVM's cicc) unpack together
# into a CUDA root at .build/cuda/nvidia/cu13/{bin,include,lib,nvvm}.
#
# Pinned to CUDA 13.0: the lent GPU machines run NVIDIA driver 580 (CUDA 13.0), and PTX written
# by a newer nvcc is refused by an older driver. Each wheel's sha256 is checked before use.
#
# Idempotent: wheels already downloaded and verified are kept, and the unpack is skipped while
# the stamp file records the same pinned set.
#
# Usage: scripts/cuda-toolchain.sh [BUILD_DIR]   (default: .build/cuda)
# Prints nothing but progress; the CUDA root is BUILD_DIR/nvidia/cu13.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD_DIR=${1:-.build/cuda}
WHEELS="$BUILD_DIR/wheels"
ROOT="$BUILD_DIR/nvidia/cu13"
STAMP="$ROOT/.verillm-toolchain"

# name==version  wheel file  sha256
PINS=(
    "nvidia-cuda-nvcc==13.0.88 nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
    "nvidia-cuda-runtime==13.0.96 nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
    "nvidia-cuda-crt==13.0.88 nvidia_cuda_crt-13.0.88-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
    "nvidia-cuda-cccl==13.0.85 nvidia_cuda_cccl-13.0.85-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
    "nvidia-nvvm==13.0.88 nvidia_nvvm-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
)

say() { echo "cuda-toolchain: $*" >&2; }

sha_ok() { # file expected
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

stamp_text=$(printf '%s\n' "${PINS[@]}")
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp_text" ] && [ -x "$ROOT/bin/nvcc" ] && [ -x "$ROOT/nvvm/bin/cicc" ]; then
    say "CUDA root up to date: $ROOT"
    exit 0
fi

mkdir -p "$WHEELS"
missing=()
for pin in "${PINS[@]}"; do
    read -r req file sha <<<"$pin"
    sha_ok "$WHEELS/$file" "$sha" || missing+=("$req")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "downloading ${missing[*]}"
    # The wheels are py3-none (pure tags apart from the platform); these are the platform tags
    # the pinned files carry.
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
        -d "$WHEELS" "${missing[@]}"
fi
for pin in "${PINS[@]}"; do
    read -r req file sha <<<"$pin"
    if ! sha_ok "$WHEELS/$file" "$sha"; then
        say "checksum mismatch or missing file for $req: $WHEELS/$file (expected sha256 $sha)"
        exit 1
    fi
done

say "unpacking into $BUILD_DIR"
rm -rf "$BUILD_DIR/nvidia"
for pin in "${PINS[@]}"; do
    read -r req file sha <<<"$pin"
    # Python's zipfile drops the executable bits; restore them from each entry's Unix mode.
    python3 - "$WHEELS/$file" "$BUILD_DIR" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.endswith("/") or ".dist-info/" in info.filename:
            continue
        path = z.extract(info, dest)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
PY
done
# Some wheels record no modes; the tools must run.
chmod +x "$ROOT"/bin/* "$ROOT"/nvvm/bin/*
for d in bin include lib nvvm; do
    [ -d "$ROOT/$d" ] || { say "unpacked root lacks $d/"; exit 1; }
done
"$ROOT/bin/nvcc" --version | grep -q 'release 13\.0' || { say "nvcc is not release 13.0"; exit 1; }
printf '%s\n' "$stamp_text" >"$STAMP"
say "CUDA root ready: $ROOT ($("$ROOT/bin/nvcc" --version | grep release))"
