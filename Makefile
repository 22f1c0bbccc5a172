# Short targets; the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMVENV := .venv-sam
UV := $(BIN)/uv
RUNTIME_PY := 3.12
PYENV_RUNTIME := PYENV_VERSION=3.12.1:3.11.7
export SAM_CLI_TELEMETRY := 0

.PHONY: setup demo test lint typecheck validate unit build lock bench bench-small soak clean

# Everything the project needs, from its own lock files. Idempotent: cheap when up to date.
$(BIN)/.installed: requirements.lock layers/changeguard/pyproject.toml tools/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(UV) pip install -q --python $(BIN)/python -r requirements.lock -e layers/changeguard -e tools
	touch $@

$(SAMVENV)/.installed: requirements-sam.lock
	test -x $(SAMVENV)/bin/python || $(PY) -m venv $(SAMVENV)
	$(SAMVENV)/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(SAMVENV)/bin/uv pip install -q --python $(SAMVENV)/bin/python -r requirements-sam.lock
	touch $@

setup: $(BIN)/.installed $(SAMVENV)/.installed

demo: $(BIN)/.installed
	$(BIN)/changeguard demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy layers/changeguard/changeguard tools/changeguard_tools functions

validate: $(SAMVENV)/.installed
	$(SAMVENV)/bin/sam validate --lint
	$(BIN)/cfn-lint template.yaml

unit: $(BIN)/.installed
	$(BIN)/pytest -n 2

test: setup lint typecheck validate unit

build: $(SAMVENV)/.installed
	$(PYENV_RUNTIME) $(SAMVENV)/bin/sam build

# Re-pin the dev environment, then the layer's requirements (for the Lambda runtime) from it.
lock: $(BIN)/.installed
	$(UV) pip compile -q requirements-dev.in -o requirements.lock --python-version 3.11
	$(UV) pip compile -q requirements-sam.in -o requirements-sam.lock --python-version 3.11
	$(UV) pip compile -q layers/changeguard/requirements.in -c requirements.lock \
	  --python-version $(RUNTIME_PY) --python-platform aarch64-manylinux_2_28 --no-annotate \
	  --custom-compile-command "make lock" \
	  --no-emit-package botocore --no-emit-package urllib3 --no-emit-package python-dateutil \
	  --no-emit-package six --no-emit-package jmespath \
	  -o layers/changeguard/requirements.txt

# Benchmarks are reported, not asserted (bench/results.json and a table on stdout).
bench: $(BIN)/.installed $(SAMVENV)/.installed
	$(PYENV_RUNTIME) $(BIN)/python -m changeguard_tools.bench --runs 10 --warm-runs 200 --replay-records 100000

bench-small: $(BIN)/.installed
	$(BIN)/python -m changeguard_tools.bench --runs 2 --warm-runs 20 --replay-records 1000 --skip-build

clean:
	rm -rf .aws-sam build .pytest_cache .mypy_cache .ruff_cache
