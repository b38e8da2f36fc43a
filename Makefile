# Two commands a newcomer needs: `make run` and `make test`. Each builds .venv from the lock
# (requirements.txt) on first use and reuses it afterwards.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# Same flags for every lock: the lock is for Linux x86_64 glibc (our machines, the Docker image).
COMPILE := pip compile --python-version 3.10 --python-platform x86_64-manylinux_2_28
STAMP := $(VENV)/.installed
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
PYTEST_ARGS ?=
# Test processes: most of a pipeline test's time is one Python thread (TFX, Beam's in-memory
# runner, imports), so two processes keep both of a 2-core CI machine busy. A file's tests stay
# in one process (--dist loadfile): module fixtures such as one pipeline run are built once.
TEST_WORKERS ?= 2
RUN_ARGS ?=

.PHONY: help venv run test unit lint format lock lock-check airflow-venv experiment ablations replay-experiment bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# python -m venv seeds pip, which TFX's Trainer uses to install the user module; uv (pinned)
# then installs the lock fast.
# Quiet (a fresh clone's `make run` fits on a screen); errors still show.
$(STAMP): requirements.txt pyproject.toml
	@set -e; if [ ! -x $(PY) ]; then \
	  python=$$(scripts/find_python.sh); \
	  echo "creating $(VENV) with $$python"; \
	  "$$python" -m venv $(VENV); \
	fi
	@echo "installing requirements.txt into $(VENV) with uv"
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(UV) pip install --quiet --python $(PY) -r requirements.txt
	@$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

venv: $(STAMP)  ## create or update .venv from the lock

run: $(STAMP)  ## run the whole pipeline locally on the embedded default (simulated logs)
	@$(VENV)/bin/lcron run $(RUN_ARGS)

lint: $(STAMP)  ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint $(AIRFLOW_STAMP)  ## lint, then every test (unit, slow and pipeline; builds both venvs)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

unit: $(STAMP)  ## the fast unit tests only
	$(PY) -m pytest -m "not slow and not pipeline" $(PYTEST_ARGS)

lock: $(STAMP)  ## re-resolve requirements*.in into the locks with uv
	$(UV) $(COMPILE) requirements.in -o requirements.txt
	$(UV) $(COMPILE) requirements-airflow.in -o requirements-airflow.txt

lock-check: $(STAMP)  ## check that the locks are what uv compiles from requirements*.in
	$(PY) -m pytest -q tests/test_lock.py

$(AIRFLOW_STAMP): requirements-airflow.txt pyproject.toml
	@set -e; if [ ! -x $(AIRFLOW_VENV)/bin/python ]; then \
	  python=$$(scripts/find_python.sh); \
	  "$$python" -m venv $(AIRFLOW_VENV); \
	fi
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(AIRFLOW_VENV)/bin/uv pip install --python $(AIRFLOW_VENV)/bin/python -r requirements-airflow.txt
	$(AIRFLOW_VENV)/bin/uv pip install --python $(AIRFLOW_VENV)/bin/python --no-deps -e .
	@touch $@

airflow-venv: $(AIRFLOW_STAMP)  ## optional extra: .venv-airflow with the Airflow lock

EXPERIMENT_WORKERS ?= 2

experiment: $(STAMP)  ## compare the paper's loss methods on simulated logs (default config)
	$(VENV)/bin/lcron experiment --config experiments/configs/default.json --out results/default \
	  --workers $(EXPERIMENT_WORKERS)

ablations: $(STAMP)  ## LCRON's ablations (e2e/single terms, sort op, tau, weighting)
	$(VENV)/bin/lcron experiment --config experiments/configs/ablations.json \
	  --out results/ablations --workers $(EXPERIMENT_WORKERS)

replay-experiment: $(STAMP)  ## BCE, LCRON, LCRON + corpus negatives replayed against the truth
	$(VENV)/bin/lcron experiment --config experiments/configs/replay.json \
	  --out results/replay --workers $(EXPERIMENT_WORKERS)

bench: $(STAMP)  ## run every benchmark script (prints figures)
	for b in benchmarks/*_bench.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove the virtual environments and local outputs
	rm -rf $(VENV) $(AIRFLOW_VENV) .pytest_cache .ruff_cache
