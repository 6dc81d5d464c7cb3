# Retail sync: `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST_ARGS ?=
# tests run two at a time (pytest-xdist: most of an end-to-end test's time is
# waiting for processes, joins and outages); 0 runs them one at a time in one process
PYTEST_WORKERS ?= 2
SIM_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help:  ## list the targets
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup:  ## create .venv and install the project with its dev tools
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	@# the dashboard's browser test drives Debian's chromium (it skips without it); as root only
	command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y chromium || \
	   (apt-get update -qq && apt-get install -y chromium) || true)

.PHONY: run
run:  ## embedded stack + one worker + two outlet agents + gentle simulated sales (Ctrl-C stops all)
	$(BIN)/python -m devstack run

.PHONY: test
test:  ## the whole test suite, two tests at a time (each runner starts its own broker and PostgreSQL)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

.PHONY: lint
lint:  ## ruff + mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: fmt
fmt:  ## format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: bench-outlet
bench-outlet:  ## outlet agent: durable accepts/s vs no-log ceiling, latency, drain
	@command -v wrk >/dev/null || [ "$$(id -u)" != 0 ] || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get install -y wrk || \
	   (apt-get update -qq && apt-get install -y wrk) || true)
	$(BIN)/python -m bench.outlet_bench

.PHONY: bench-central
bench-central:  ## central worker: events/s live and packed vs raw aiokafka, lag, recovery, RSS
	$(BIN)/python -m bench.central_bench

.PHONY: bench-recovery
bench-recovery:  ## worker kill -9 and restart on Tansu's S3 storage: recovery_s, changelog ends at once vs one by one
	$(BIN)/python -m bench.recovery_bench

.PHONY: bench-sink
bench-sink:  ## Postgres sink: rows/s vs raw COPY, commit lag at 1,000 events/s
	$(BIN)/python -m bench.sink_bench

.PHONY: chaos
chaos:  ## chain simulator + one of each fault (S3 broker); pass/fail per check, JSON last line
	$(BIN)/python -m sim chaos $(SIM_ARGS)

.PHONY: bench
bench:  ## the full benchmark (100 stores, 1,010 events/s offered, memory broker): bench/results/report.*; JSON last line
	$(BIN)/python -m sim bench $(SIM_ARGS)

.PHONY: clean
clean:  ## remove local state (.data, .devstack)
	rm -rf .data .devstack
