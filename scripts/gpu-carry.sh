#!/usr/bin/env bash
# Carries the cuda build and the embedded model to a GPU machine lent through the device tool,
# whose calls each take at most 64 MiB of working tree (the model alone is 98 MB), and runs
# scripts/gpu-device-run.sh there.
#
#   here:    make dist-cuda && scripts/gpu-carry.sh pack
#            writes .gpu/1 (verillm-tui.xz + the model's first half) and .gpu/2 (second half),
#            each with a SHA256SUMS file; .gpu/ is git-ignored, so only `carry` takes it along.
#   device:  call 1, carry [".gpu/1"]:  scripts/gpu-carry.sh stash .gpu/1
#            checks and copies the pieces to $CARRY_DIR (outside the repo, so they survive
#            until the next call while the machine stays warm, about 30 s), then a preflight:
#            the CUDA libraries are looked for and `devices` must list a CUDA device.
#            call 2, carry [".gpu/2"]:  scripts/gpu-carry.sh run .gpu/2
#            stashes the second half, joins and checks the model (sha256) and runs
#            scripts/gpu-device-run.sh with OUT=$OUT (what comes back from the device call).
#            Give it DEADLINE_S=<the call's timeout_s minus 40> when the call gets under 580 s.
#
# Environment: CARRY_DIR (default /tmp/verillm-carry); MODEL for `pack` (default: the model
# cache's SmolLM2-135M-Instruct.Q4_1.gguf); DIST for `pack` (default .build/cuda/dist/
# verillm-tui.xz). Everything else is passed on to gpu-device-run.sh (PLAN, TRIALS, ...).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CARRY_DIR=${CARRY_DIR:-/tmp/verillm-carry}
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
LIMIT_BYTES=$((64 * 1024 * 1024))

die() { echo "gpu-carry: $*" >&2; exit 2; }
say() { echo "gpu-carry: $*" >&2; }

pack() {
    local model=${MODEL:-${VERILLM_MODEL_DIR:-$HOME/.cache/verillm-tui/models}/$GGUF_NAME}
    local dist=${DIST:-$REPO/.build/cuda/dist/verillm-tui.xz}
    [ -f "$dist" ] || die "no $dist: run \`make dist-cuda\` first"
    [ -f "$model" ] || die "no model at $model: run \`make model\` first (or set MODEL)"
    local out=$REPO/.gpu
    rm -rf "$out"
    mkdir -p "$out/1" "$out/2"
    cp "$dist" "$out/1/verillm-tui.xz"
    # Two halves of under 50 MB each; the binary travels with the first.
    split -n 2 -d -a 1 "$model" "$out/model.part"
    mv "$out/model.part0" "$out/1/model.part0"
    mv "$out/model.part1" "$out/2/model.part1"
    local tree_bytes part dir bytes
    # (du fails on a tracked file deleted from the working tree; the total it prints still counts.)
    tree_bytes=$(cd "$REPO" && { git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null || true; } | tail -1 | cut -f1)
    for dir in "$out/1" "$out/2"; do
        (cd "$dir" && sha256sum -- * >SHA256SUMS)
        bytes=$(du -cb "$dir" | tail -1 | cut -f1)
        say "$(basename "$dir"): $(ls "$dir" | tr '\n' ' ')— $((bytes / 1048576)) MiB + working tree $((tree_bytes / 1048576)) MiB"
        [ $((bytes + tree_bytes)) -lt "$LIMIT_BYTES" ] || die "$dir and the working tree exceed 64 MiB"
    done
    say "device call 1: carry [\".gpu/1\"], command: scripts/gpu-carry.sh stash .gpu/1"
    say "device call 2 (within 30 s): carry [\".gpu/2\"], command: scripts/gpu-carry.sh run .gpu/2"
}

# Checks a carried folder against its SHA256SUMS and copies its files into CARRY_DIR.
stash() {
    local dir=${1:?usage: gpu-carry.sh stash DIR}
    [ -f "$dir/SHA256SUMS" ] || die "$dir/SHA256SUMS missing: was $dir carried?"
    # Only plain names: the list travelled, and must not point anywhere else.
    if grep -qvE '^[0-9a-f]{64}  [A-Za-z0-9._-]+$' "$dir/SHA256SUMS"; then
        die "$dir/SHA256SUMS has a line that is not \"<sha256>  <plain file name>\""
    fi
    (cd "$dir" && sha256sum --quiet -c SHA256SUMS) || die "$dir: a piece does not match its checksum"
    # The first call's folder (it holds the binary) starts afresh: no pieces of an older pack.
    if grep -q '  verillm-tui.xz$' "$dir/SHA256SUMS"; then rm -rf "$CARRY_DIR"; fi
    mkdir -p "$CARRY_DIR"
    local name
    while read -r _ name; do cp --remove-destination "$dir/$name" "$CARRY_DIR/$name"; done <"$dir/SHA256SUMS"
    say "stashed $(awk '{ print $2 }' "$dir/SHA256SUMS" | tr '\n' ' ')in $CARRY_DIR"
}

case ${1:-} in
    pack) pack ;;
    stash)
        stash "${2:-}"
        [ -f "$CARRY_DIR/verillm-tui.xz" ] || exit 0
        # While the model's second half is on its way: does CUDA work at all?
        PREFLIGHT=1 OUT=${OUT:-$CARRY_DIR/preflight} WORK=$CARRY_DIR/work \
            "$REPO/scripts/gpu-device-run.sh" "$CARRY_DIR/verillm-tui.xz" -
        ;;
    run)
        stash "${2:-}"
        [ -f "$CARRY_DIR/verillm-tui.xz" ] || die "no binary in $CARRY_DIR: run \`stash .gpu/1\` in the call before"
        ls "$CARRY_DIR"/model.part* >/dev/null 2>&1 || die "no model pieces in $CARRY_DIR"
        WORK=${WORK:-$CARRY_DIR/work} "$REPO/scripts/gpu-device-run.sh" "$CARRY_DIR/verillm-tui.xz" "$CARRY_DIR/model.part"
        ;;
    *) die "usage: gpu-carry.sh pack | stash DIR | run DIR   (see the top of this file)" ;;
esac
