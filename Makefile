# The two set-up commands of the README: `make run` and `make test`. Both build .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
export HF_HUB_OFFLINE := 1

.PHONY: install run serve train test test-fast test-model lint format lock bench services services-stop \
	label-studio mlflow-server clean

$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PY) >/dev/null || { echo "need $(PY) (set PY=python3.x)"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the locked set (CPU torch included: constraints.txt), then the project itself without resolving again
	$(BIN)/pip install -q -c constraints.txt -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## re-resolve requirements.lock from pyproject.toml (pip-tools), after changing a dependency
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --no-header --extra train --extra dev --strip-extras -c constraints.txt \
		--output-file $(LOCK) pyproject.toml

## train the default model if there is none, then serve /classify on 127.0.0.1:8000 (no keys: open, loopback only;
## plain-text logs)
run: $(STAMP)
	TRIAGE_LOG_FORMAT=$${TRIAGE_LOG_FORMAT:-text} $(BIN)/triage serve --train-if-missing

train: $(STAMP)
	$(BIN)/triage train

## the real Label Studio and MLflow servers the labeling-loop tests use (installed on first use)
label-studio:
	scripts/label-studio start

mlflow-server: $(STAMP)
	scripts/mlflow-server start

services: label-studio mlflow-server

services-stop:
	-scripts/label-studio stop
	-scripts/mlflow-server stop

## the whole test suite (what CI runs): starts the servers, runs every tier, stops the servers again
test: $(STAMP)
	@trap '$(MAKE) --no-print-directory services-stop' EXIT; \
	$(MAKE) --no-print-directory services && \
	set -a && . var/label-studio/env && . var/mlflow-server/env && set +a && \
	$(BIN)/python -m pytest --durations=20

## the unit tier: no model, no servers (~40 s: a few tests run the CLI in a fresh process)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not model and not services"

## the unit and model tiers: a small real model trained once, no servers (~10 min with the fuzz and faults runs)
test-model: $(STAMP)
	$(BIN)/python -m pytest -m "not services"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy serving training loop triage benchmarks tests

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## encoder, served model, HTTP latency, memory, cold start and training time in one run (~5 min;
## `make bench BENCH_ARGS=--quick` for ~2 min); prints a table, writes benchmarks/results/*.json
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf .cache var build *.egg-info
