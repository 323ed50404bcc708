#!/usr/bin/env bash
# What a GPU machine runs to exercise the CUDA build of verillm-tui (built here with
# `make build-cuda`: target/cuda/release/verillm-tui).
#
# Usage: scripts/gpu-device-run.sh BIN MODEL
#   BIN    the cuda build of verillm-tui, or that file compressed (.xz, .gz, .zst): the device
#          tool carries at most 64 MiB per call, and the binary is ~66 MB (~10 MB as .xz).
#   MODEL  the embedded model's GGUF (SmolLM2-135M-Instruct.Q4_1.gguf), given as
#            - the .gguf file itself, or
#            - a folder holding its pieces model.part* (made with e.g.
#              `split -b 30M SmolLM2-135M-Instruct.Q4_1.gguf model.part`), or
#            - a path prefix of those pieces (DIR/model.part),
#          joined in name order; either way the file must have sha256
#          b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53.
#
# Environment (all optional):
#   OUT          where results go (default ./gpu-results). Written there: summary.txt (one line
#                per step with its exit status and time), report.md (`verillm-tui report` of
#                every run), run.log (everything printed) and
#                results.tar.gz (the whole tree: each step's stdout/stderr, run summaries and
#                trial JSON, bench JSON, ldd and nvidia-smi output). Set KEEP_TREE=1 to
#                also leave the unpacked tree in $OUT/tree (the device tool returns at most
#                8 files, so by default only those four files are left in $OUT).
#   WORK         scratch folder (default /tmp/verillm-gpu).
#   PLAN         the steps, most important first, as "WHAT:DTYPE" words, WHAT being an experiment
#                or `bench` (default: "exp1:f16 exp1:bf16 exp2:f16 exp2:bf16 exp3:f16 exp5:f16
#                exp1:f32 exp2:f32 bench:f16 bench:bf16 bench:f32 exp3:bf16 exp5:bf16": what the
#                GPU issue asks for first, the f32 drift (≈1e-6 across GPU and CPU) next; on an
#                H100 all of it took 190 s, docs/gpu-h100.md).
#   TRIALS       --trials for each run (default 3); MAX_TOKENS: --max-tokens if set.
#   RATIO_AT     bench's --ratio-at (default 128,512,2048).
#   STEP_TIMEOUT seconds allowed per step (default 240).
#   DEADLINE_S   seconds from the start after which no step starts and running ones are cut
#                short, so results are packed before the device call's own limit (default 540;
#                set it to the call's timeout minus ~40 s when the call has less). report.md and
#                results.tar.gz are also refreshed after every step.
#   CUDA_LIB_DIRS extra folders (colon-separated) searched first for the CUDA libraries.
#   BENCH=0      skip bench steps.
#   PROFILE_TEMPLATE  the forced profile, {dtype} replaced by each dtype (default cuda:0:{dtype}).
#   CHECK_LIBS=0 skip the CUDA library search (for a rehearsal with a CPU build).
#   DRY_RUN=1    list the steps without running them.
#   PREFLIGHT=1  only unpack the binary, find the CUDA libraries and list the devices (MODEL is
#                not read; give `-`): a cheap first device call that fails early if CUDA does.
# Rehearsal on a machine with no GPU (GPU roles on cpu:bf16, short runs); with the cuda
# build, put .build/cuda/stubs and .build/cuda/nvidia/cu13/lib on LD_LIBRARY_PATH first (the
# stubs answer every call with "no device", so only the CPU is used):
#   CHECK_LIBS=0 PROFILE_TEMPLATE='cpu:{dtype}' PLAN='exp1:bf16 exp2:bf16 bench:bf16' TRIALS=1 \
#     MAX_TOKENS=8 RATIO_AT=16 OUT=/tmp/rehearsal scripts/gpu-device-run.sh BIN MODEL
# scripts/gpu-carry.sh packs the binary and the model for the device tool and runs this script
# there (see the README's GPU section).
#
# The binary links libcuda.so.1, libcudart.so.13, libcurand.so.10 and libcublas.so.13 by SONAME
# (libcublas in turn needs libcublasLt.so.13). libcuda comes with the driver; the others come
# with a CUDA 13 toolkit or with the nvidia-* pip wheels (e.g. PyTorch's cu130 build:
# site-packages/nvidia/cu13/lib). This script asks `ldd` which libraries are not found, looks for
# each (CUDA_LIB_DIRS, LD_LIBRARY_PATH, the usual toolkit folders, ldconfig, then `find /`),
# puts their folders on LD_LIBRARY_PATH and asks again until none is missing; `ldd` output is
# saved, and a library still missing stops the run before anything else.
#
# Steps: devices, doctor, then the PLAN's steps in order: `run EXP --gpu cuda:0:D` puts the
# inferencer and every verifier that has a gpu_device in configs/experiments.yaml on cuda:0:D;
# the cross-device verifiers of exp2/exp4 stay on the CPU (f32), so exp2 is cuda D inference ->
# cpu f32 verification; `bench --device cuda:0:D`.
# Steps go on after a failure; the script exits non-zero if any step failed or was skipped.
set -uo pipefail

die() { echo "gpu-device-run: $*" >&2; [ -n "${SUMMARY:-}" ] && echo "stopped: $*" >>"$SUMMARY"; exit 2; }

BIN=${1:-}
MODEL=${2:-}
[ -n "$BIN" ] && [ -n "$MODEL" ] || die "usage: $0 BIN MODEL   (see the top of this file)"
[ -f "$BIN" ] || die "no such file: $BIN"
REPO=$(cd "$(dirname "$0")/.." && pwd)

OUT=${OUT:-./gpu-results}
WORK=${WORK:-/tmp/verillm-gpu}
PLAN=${PLAN:-exp1:f16 exp1:bf16 exp2:f16 exp2:bf16 exp3:f16 exp5:f16 exp1:f32 exp2:f32 bench:f16 bench:bf16 bench:f32 exp3:bf16 exp5:bf16}
TRIALS=${TRIALS:-3}
RATIO_AT=${RATIO_AT:-128,512,2048}
DEADLINE_S=${DEADLINE_S:-540}
STARTED_AT=$(date +%s)
MAX_TOKENS=${MAX_TOKENS:-}
STEP_TIMEOUT=${STEP_TIMEOUT:-240}
DRY_RUN=${DRY_RUN:-0}
PROFILE_TEMPLATE=${PROFILE_TEMPLATE:-cuda:0:\{dtype\}}
CHECK_LIBS=${CHECK_LIBS:-1}
PREFLIGHT=${PREFLIGHT:-0}
BENCH=${BENCH:-1}
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
TREE=$WORK/results
rm -rf "$TREE"
mkdir -p "$TREE/models" "$TREE/data"
# A compressed binary (the stripped build is ~64 MB, ~10 MB as .xz) is unpacked first.
case $BIN in
    *.xz) xz -dc "$BIN" >"$WORK/verillm-tui" || die "cannot unpack $BIN"; BIN=$WORK/verillm-tui ;;
    *.gz) gzip -dc "$BIN" >"$WORK/verillm-tui" || die "cannot unpack $BIN"; BIN=$WORK/verillm-tui ;;
    *.zst) zstd -dc "$BIN" >"$WORK/verillm-tui" || die "cannot unpack $BIN"; BIN=$WORK/verillm-tui ;;
esac
chmod +x "$BIN" 2>/dev/null || true
[ -x "$BIN" ] || die "not an executable: $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
LOG=$OUT/run.log
SUMMARY=$OUT/summary.txt
: >"$LOG"
: >"$SUMMARY"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

note() { echo "== $*"; }

# ---- the model -------------------------------------------------------------------------------
MODEL_DIR=$TREE/models
GGUF=$MODEL_DIR/$GGUF_NAME
if [ "$PREFLIGHT" != 1 ]; then
    if [ -f "$MODEL" ]; then
        cp "$MODEL" "$GGUF"
    else
        if [ -d "$MODEL" ]; then
            # Pieces anywhere below the folder (they may have travelled in separate folders),
            # ordered by file name.
            mapfile -t parts < <(find "$MODEL" -type f -name 'model.part*' -printf '%f\t%p\n' | LC_ALL=C sort | cut -f2)
        else
            parts=()
            for f in "$MODEL"*; do [ -f "$f" ] && parts+=("$f"); done
        fi
        [ "${#parts[@]}" -gt 0 ] || die "no model file and no pieces model.part* at $MODEL"
        note "joining model pieces: ${parts[*]}"
        cat "${parts[@]}" >"$GGUF"
    fi
    actual=$(sha256sum "$GGUF" | cut -d' ' -f1)
    [ "$actual" = "$GGUF_SHA256" ] || die "model sha256 is $actual, expected $GGUF_SHA256"
    note "model ok: $GGUF"
fi

# ---- the CUDA libraries ----------------------------------------------------------------------
lib_dirs=()
add_dir() { local d; for d in "${lib_dirs[@]}"; do [ "$d" = "$1" ] && return; done; lib_dirs+=("$1"); }
# Every CUDA-looking library on the machine, found with one walk of the file system the first
# time a library is not in the usual places (a big image takes a while to walk).
LIB_INDEX=$WORK/cuda-libs.txt
rm -f "$LIB_INDEX"
lib_index() {
    [ -f "$LIB_INDEX" ] && return
    echo "== searching the file system for CUDA libraries…" >&2
    # Bounded: a walk that never ends must not use up the device call.
    timeout 90 find / \( -path /proc -o -path /sys \) -prune -o \( -name 'libcu*.so*' -o -name 'libnv*.so*' \) -print 2>/dev/null |
        grep -v '/stubs/' >"$LIB_INDEX"
}
find_lib() { # name -> folder on stdout
    local name=$1 d
    IFS=: read -r -a extra <<<"${CUDA_LIB_DIRS:-}:${LD_LIBRARY_PATH:-}"
    for d in "${extra[@]}" /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu \
        /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        case $d in ""|*stubs*) continue ;; esac
        [ -e "$d/$name" ] && { echo "$d"; return; }
    done
    d=$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n { print $NF; exit }')
    [ -n "$d" ] && { dirname "$d"; return; }
    lib_index
    d=$(awk -v n="/$name" 'substr($0, length($0) - length(n) + 1) == n { print; exit }' "$LIB_INDEX")
    [ -n "$d" ] && dirname "$d"
}
not_found() { ldd "$BIN" 2>/dev/null | awk '/not found/ { print $1 }' | sort -u; }
# The driver keeps the kernels it JIT-compiles in ~/.nv/ComputeCache, by default only 256 MiB:
# room for all of candle's, so that only the first process pays the ≈15 s.
export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
missing=""
if [ "$DRY_RUN" != 1 ] && [ "$CHECK_LIBS" = 1 ]; then
    # A library found can need others (libcublas needs libcublasLt): ask ldd again each round.
    for round in 1 2 3 4; do
        missing=$(not_found)
        [ -z "$missing" ] && break
        progress=0
        for name in $missing; do
            dir=$(find_lib "$name")
            [ -n "$dir" ] || continue
            echo "found $name in $dir"
            add_dir "$dir"
            progress=1
        done
        [ "$progress" = 1 ] || break
        # (An empty entry would mean the current folder.)
        LD_LIBRARY_PATH=$(IFS=:; echo "${lib_dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        export LD_LIBRARY_PATH
    done
    missing=$(not_found | tr '\n' ' ')
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$BIN" >"$TREE/ldd.txt" 2>&1
    cat "$TREE/ldd.txt"
    (nvidia-smi >"$TREE/nvidia-smi.txt" 2>&1) || true
    [ -z "$missing" ] || echo "MISSING CUDA LIBRARIES: $missing"
fi

failures=0
seconds_left() { echo $((DEADLINE_S - ($(date +%s) - STARTED_AT))); }
step() { # name, command...
    local name=$1; shift
    local dir=$TREE/steps
    mkdir -p "$dir"
    note "$name: $*"
    if [ "$DRY_RUN" = 1 ]; then echo "DRY $name: $*" >>"$SUMMARY"; return 0; fi
    # Leave the last 20 s for packing the results.
    local left limit=$STEP_TIMEOUT
    left=$(($(seconds_left) - 20))
    if [ "$left" -lt 15 ]; then
        printf '%-24s skipped: out of time (DEADLINE_S=%s)\n' "$name" "$DEADLINE_S" | tee -a "$SUMMARY"
        failures=$((failures + 1))
        return 1
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    local start end rc
    start=$(date +%s.%N)
    timeout "$limit" "$@" >"$dir/$name.out" 2>"$dir/$name.err"
    rc=$?
    end=$(date +%s.%N)
    tail -n 20 "$dir/$name.out"; tail -n 20 "$dir/$name.err"
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    printf '%-24s rc=%-3s %7ss  %s\n' "$name" "$rc" "$secs" "$*" | tee -a "$SUMMARY"
    [ "$rc" = 0 ] || failures=$((failures + 1))
    snapshot
}

# What is under $OUT comes back even when the device call is cut short, so the report and the
# packed tree are brought up to date after every step, not only at the end.
REPORT_RC=none
snapshot() {
    if [ "$PREFLIGHT" != 1 ]; then
        "$BIN" report "$TREE/data" >"$OUT/report.md" 2>"$TREE/report.err"
        REPORT_RC=$?
    fi
    pack_tree
}
pack_tree() { # not the 98 MB model
    tar -C "$WORK" --exclude "results/models" -czf "$OUT/results.tar.gz.part" results 2>/dev/null &&
        mv "$OUT/results.tar.gz.part" "$OUT/results.tar.gz"
}

G=(--model-dir "$MODEL_DIR" --data-dir "$TREE/data")
run_extra=(--trials "$TRIALS" --json)
[ -n "$MAX_TOKENS" ] && run_extra+=(--max-tokens "$MAX_TOKENS")

if [ -n "$missing" ]; then
    echo "missing CUDA libraries: $missing" | tee -a "$SUMMARY"
    failures=1
else
    step devices "$BIN" "${G[@]}" devices
    if [ "$PREFLIGHT" = 1 ]; then
        grep -q '^cuda' "$TREE/steps/devices.out" 2>/dev/null || [ "$CHECK_LIBS" != 1 ] || {
            echo "preflight: no CUDA device listed" | tee -a "$SUMMARY"; failures=$((failures + 1)); }
        PLAN=""
    else
        # Checks the build, the devices, the model and the configuration together.
        step doctor "$BIN" "${G[@]}" doctor
    fi
    for item in $PLAN; do
        what=${item%%:*}
        dtype=${item#*:}
        [ "$what" != "$item" ] && [ -n "$dtype" ] || { echo "PLAN item $item: expected WHAT:DTYPE" | tee -a "$SUMMARY"; failures=$((failures + 1)); continue; }
        profile=${PROFILE_TEMPLATE//\{dtype\}/$dtype}
        if [ "$what" = bench ]; then
            [ "$BENCH" = 1 ] || continue
            step "bench-$dtype" "$BIN" "${G[@]}" bench --json --device "$profile" --ratio-at "$RATIO_AT"
            continue
        fi
        step "$what-$dtype" "$BIN" "${G[@]}" run "$what" --gpu "$profile" "${run_extra[@]}" \
            --out "$TREE/data/$what-$dtype"
    done
fi

# ---- report and pack -----------------------------------------------------------------------------
if [ "$DRY_RUN" != 1 ] && [ "$PREFLIGHT" != 1 ] && [ -z "$missing" ]; then
    # One Markdown row per run (accept rate, verdicts, drift, speed), written by the last step's
    # snapshot.
    if [ "$REPORT_RC" = 0 ]; then
        note "report:"; cat "$OUT/report.md"; cat "$TREE/report.err"
    else
        echo "report: failed: $(cat "$TREE/report.err" 2>/dev/null)" | tee -a "$SUMMARY"
    fi
    for f in "$TREE"/steps/bench-*.out; do
        [ -s "$f" ] && { note "$(basename "$f" .out):"; cat "$f"; }
    done
fi
pack_tree # also when no step ran (ldd and nvidia-smi output)
if [ "${KEEP_TREE:-0}" = 1 ]; then rm -rf "$OUT/tree"; cp -r "$TREE" "$OUT/tree"; fi
note "summary ($failures failed):"
cat "$SUMMARY"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
[ "$failures" = 0 ]
