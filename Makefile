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

# Spark with Iceberg's Java library, the third outside engine (tests/test_spark.py): pyspark from the
# `spark` extra; the Iceberg runtime jar from a wheel that must be installed with --no-deps (an extra
# cannot say that); Debian's PostgreSQL JDBC driver, apt-get update only when apt does not know it yet.
SPARK_STAMP := $(VENV)/.spark-$(shell cksum pyproject.toml | cut -d' ' -f1)
JDBC_JAR := /usr/share/java/postgresql.jar

.PHONY: spark-deps

$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[spark]'
	$(BIN)/python -m pip install -q --no-deps snowpark-connect-deps-iceberg==1.0.2
	rm -f $(VENV)/.spark-*
	touch $@

spark-deps: $(SPARK_STAMP)
	@test -f $(JDBC_JAR) || DEBIAN_FRONTEND=noninteractive apt-get install -y -q libpostgresql-jdbc-java \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libpostgresql-jdbc-java; }

lint: install
	$(BIN)/ruff check app workers tests scripts
	$(BIN)/mypy

# Test files run on TEST_WORKERS processes (pytest-xdist), each file whole on one worker (its
# module fixtures are made once); TEST_WORKERS=0 runs everything in this process. Three on 2 cores:
# the tests mostly wait on the processes they start (2 workers kept 1.5 cores busy, measured);
# 9 min 14 s against 10 min 34 s for 2 workers, same machine, same hour.
TEST_WORKERS ?= 3

test: lint js-deps spark-deps
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

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
# faults, every row counted. Needs root. RUNS=N repeats it (default 3); TOPOLOGY=s3-rest runs it on
# SeaweedFS's S3 and REST catalog (default file-sql: SQLite + file://); the table is printed and
# written into RELIABILITY.md (one table per topology).
RUNS ?= 3
TOPOLOGY ?= file-sql
.PHONY: chaos
chaos: install
	$(BIN)/python -m chaos.run --runs $(RUNS) --topology $(TOPOLOGY) --update-doc RELIABILITY.md

# Load (issue 6): 20 concurrent jobs x 50 tasks over 3 hosts on a real local stack while status is
# polled as fast as it goes; p50/p99 of GetJobStatus and StartJob, every job committed exactly once.
# Writes bench/results/load.json and prints a table (LOAD_ARGS="--pollers 16" to change the load).
LOAD_ARGS ?=
.PHONY: load
load: install
	$(BIN)/python -m bench.load $(LOAD_ARGS)
