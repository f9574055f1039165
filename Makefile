# The two set-up commands of the README: `make run` and `make test`. Both build .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: install run serve train test test-fast lint bench services label-studio mlflow-server clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) (set PY=python3.x)"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## train the default model if there is none, then serve /classify on 127.0.0.1:8000
run: $(STAMP)
	$(BIN)/triage serve --train-if-missing

train: $(STAMP)
	$(BIN)/triage train

## the real Label Studio and MLflow servers the labeling-loop tests use (installed on first use)
label-studio:
	scripts/label-studio start

mlflow-server: $(STAMP)
	scripts/mlflow-server start

services: label-studio mlflow-server

## the whole test suite (what CI runs): starts the servers, then pytest
test: $(STAMP) services
	set -a && . var/label-studio/env && . var/mlflow-server/env && set +a && \
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow and not services"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy serving training triage benchmarks

## encoder, served model, HTTP latency, memory, cold start and training time in one run (~5 min;
## `make bench BENCH_ARGS=--quick` for ~2 min); prints a table, writes benchmarks/results/*.json
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf .cache var build *.egg-info
