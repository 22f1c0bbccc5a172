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

.PHONY: setup demo test lint typecheck validate unit build lock bench bench-small soak clean checkov audit

# Everything the project needs, from its own lock files. Idempotent: cheap when up to date.
$(BIN)/.installed: requirements.lock layers/changeguard/pyproject.toml tools/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(UV) pip install -q --python $(BIN)/python -r requirements.lock -e layers/changeguard -e tools
	touch $@

# issue 8: checkov and pip-audit in their own environment (checkov pins an old boto3).
CHECKOVVENV := .venv-checkov
$(CHECKOVVENV)/.installed: requirements-checkov.lock
	test -x $(CHECKOVVENV)/bin/python || $(PY) -m venv $(CHECKOVVENV)
	$(CHECKOVVENV)/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(CHECKOVVENV)/bin/uv pip install -q --python $(CHECKOVVENV)/bin/python -r requirements-checkov.lock
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
	$(BIN)/pytest -n 4 -m "not slow" --durations=20

# -- issue 8: static checks and the full-size hardening run ---------------------------------
# checkov on the template: zero failed checks; each skip is justified where it is declared
# (Metadata: checkov: skip: [{id, comment}] on the resource).
checkov: $(CHECKOVVENV)/.installed
	$(CHECKOVVENV)/bin/checkov -f template.yaml --framework cloudformation --skip-download --compact --quiet

# pip-audit of the layer's locked requirements. Fails on a known vulnerability; a package the
# vulnerability service could not answer for is reported, and fails with CHANGEGUARD_AUDIT_STRICT=1.
audit: $(CHECKOVVENV)/.installed $(BIN)/.installed
	mkdir -p build/hardening
	$(CHECKOVVENV)/bin/pip-audit -r layers/changeguard/requirements.txt --no-deps --disable-pip \
	  --progress-spinner off -f json -o build/hardening/pip-audit.json 2>/dev/null || true
	$(BIN)/python -m changeguard_tools.audit build/hardening/pip-audit.json layers/changeguard/requirements.txt

# The hardening properties at full size (1,000 duplicates, 10,000 bad events per function,
# 10 loop generations); `make test` runs them at a tenth (CHANGEGUARD_SOAK_SCALE=0.1).
soak: $(BIN)/.installed
	mkdir -p build/hardening
	CHANGEGUARD_SOAK_SCALE=1.0 $(BIN)/pytest tests/hardening -n 2 -rfE --durations=25 \
	  --junitxml=build/hardening/soak.xml; status=$$?; \
	$(BIN)/python -c "import xml.etree.ElementTree as E; s=E.parse('build/hardening/soak.xml').getroot().find('testsuite'); \
	  print(f\"soak at full size: {s.get('tests')} properties, {s.get('failures')} failed, {s.get('errors')} errors, {s.get('skipped')} skipped, {float(s.get('time')):.0f} s\")"; \
	exit $$status

test: setup lint typecheck validate checkov audit unit

build: $(SAMVENV)/.installed
	$(PYENV_RUNTIME) $(SAMVENV)/bin/sam build

# -- the layer, byte-compiled for the runtime (issue 9) -----------------------------------------
# `sam build` runs this target (template.yaml: ChangeGuardLayer, BuildMethod makefile) with
# ARTIFACTS_DIR set. Lambda's /opt is read-only, so a layer without .pyc files is compiled again on
# every cold start. Dependencies are the lock's aarch64 CPython 3.12 wheels (no Docker needed);
# unchecked-hash .pyc files stay valid whatever timestamps the zip gives the sources.
LAYER_PY ?= python3.12
LAYER_SRC := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))/layers/changeguard
.PHONY: build-ChangeGuardLayer
build-ChangeGuardLayer:
	test -n "$(ARTIFACTS_DIR)"
	rm -rf "$(ARTIFACTS_DIR)/python"
	$(PYENV_RUNTIME) $(LAYER_PY) -m pip install -q --disable-pip-version-check --no-compile --no-deps \
	  --platform manylinux2014_aarch64 --implementation cp --python-version $(RUNTIME_PY) --only-binary=:all: \
	  --target "$(ARTIFACTS_DIR)/python" -r "$(LAYER_SRC)/requirements.txt"
	cp -R "$(LAYER_SRC)/changeguard" "$(ARTIFACTS_DIR)/python/changeguard"
	find "$(ARTIFACTS_DIR)/python" -depth -type d \( -name __pycache__ -o -name tests \) -exec rm -rf {} +
	rm -rf "$(ARTIFACTS_DIR)/python/bin"
	find "$(ARTIFACTS_DIR)/python" -path '*.dist-info/*' \
	  \( -name RECORD -o -name INSTALLER -o -name REQUESTED -o -name direct_url.json \) -delete
	$(PYENV_RUNTIME) $(LAYER_PY) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)/python"

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
	$(UV) pip compile -q requirements-checkov.in -o requirements-checkov.lock --python-version 3.11

# Benchmarks are reported, not asserted (bench/results.json and a table on stdout).
# The cold-start children run on the runtime's Python (issue 9): .venv-bench holds the layer's
# locked packages and the SDK the Lambda runtime provides, at the lock's versions, for this machine.
BENCHVENV := .venv-bench
$(BENCHVENV)/.installed: layers/changeguard/requirements.txt requirements.lock $(BIN)/.installed
	test -x $(BENCHVENV)/bin/python || $(PYENV_RUNTIME) python$(RUNTIME_PY) -m venv $(BENCHVENV)
	grep -E '^(boto3|botocore|jmespath|python-dateutil|s3transfer|six|urllib3)==' requirements.lock \
	  > $(BENCHVENV)/runtime-sdk.txt
	$(UV) pip install -q --python $(BENCHVENV)/bin/python --no-deps \
	  -r layers/changeguard/requirements.txt -r $(BENCHVENV)/runtime-sdk.txt
	touch $@

bench: $(BIN)/.installed $(SAMVENV)/.installed $(BENCHVENV)/.installed
	$(PYENV_RUNTIME) $(BIN)/python -m changeguard_tools.bench --runs 10 --warm-runs 200 --replay-records 100000 \
	  --child-python $(BENCHVENV)/bin/python

bench-small: $(BIN)/.installed
	$(BIN)/python -m changeguard_tools.bench --runs 2 --warm-runs 20 --replay-records 1000 --skip-build

clean:
	rm -rf .aws-sam build .pytest_cache .mypy_cache .ruff_cache

# Tests that build deployment artifacts (sam build of the layer); not part of `make test`.
.PHONY: test-slow
test-slow: $(BIN)/.installed $(SAMVENV)/.installed
	$(BIN)/pytest -m slow
