# Floe: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test lint typecheck unit demo protos clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Floe needs Python 3.10+") if sys.version_info < (3, 10) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

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

demo: install
	$(BIN)/floe demo

protos: install
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf .floe .pytest_cache .mypy_cache .ruff_cache
