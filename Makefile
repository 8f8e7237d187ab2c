# Floe: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install runtime test lint unit demo protos clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Floe needs Python 3.10+") if sys.version_info < (3, 10) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# The demo needs only Floe itself (no test or benchmark tools): a lighter install on a fresh machine.
RUNTIME_STAMP := $(VENV)/.runtime-$(shell cksum pyproject.toml | cut -d' ' -f1)

$(RUNTIME_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Floe needs Python 3.10+") if sys.version_info < (3, 10) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	rm -f $(VENV)/.runtime-*
	touch $@

runtime: $(RUNTIME_STAMP)

# The Node client of the outside checks (tests/test_outside_checks.py): reinstalled only when
# tests/js/node_modules is missing or package-lock.json changed (npm ci empties node_modules first).
JS_DIR := tests/js
JS_STAMP := $(JS_DIR)/node_modules/.installed-$(shell cksum $(JS_DIR)/package-lock.json | cut -d' ' -f1)

.PHONY: js-deps

$(JS_STAMP): $(JS_DIR)/package-lock.json
	npm ci --prefix $(JS_DIR) --ignore-scripts --no-audit --no-fund
	touch $@

js-deps: $(JS_STAMP)

lint: install
	$(BIN)/ruff check app workers tests scripts
	$(BIN)/mypy

test: lint js-deps
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q -m "not integration"

demo: runtime
	$(BIN)/floe demo

protos: install
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf .floe .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (issue 8): Floe against the Parquet floor, pyiceberg and Daft; see BENCHMARKS.md.
.PHONY: bench bench-quick

bench-quick: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run --quick

bench: install
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run --full

# The fault matrix (chaos/, RELIABILITY.md): each worker host in its own network namespace, real
# faults, every row counted. Needs root. RUNS=N repeats it (default 3); the table is printed and
# written into RELIABILITY.md.
RUNS ?= 3
.PHONY: chaos
chaos: install
	$(BIN)/python -m chaos.run --runs $(RUNS) --update-doc RELIABILITY.md

# Load (issue 6): 20 concurrent jobs x 50 tasks over 3 hosts on a real local stack while status is
# polled as fast as it goes; p50/p99 of GetJobStatus and StartJob, every job committed exactly once.
# Writes bench/results/load.json and prints a table (LOAD_ARGS="--pollers 16" to change the load).
LOAD_ARGS ?=
.PHONY: load
load: install
	$(BIN)/python -m bench.load $(LOAD_ARGS)
