# Starfish Gate. `make demo` and `make test` install what is missing themselves:
# Debian packages (as root, --no-install-recommends; otherwise the apt line is printed),
# uv (into .tools/ when not on PATH) and the pinned .venv from uv.lock.

SHELL := /bin/bash
.DEFAULT_GOAL := help
# a,b: whichever of the names this release has (zbar is libzbar0t64 from Debian 13 / Ubuntu 24.04)
# chromium: the technician page's browser tests (Playwright drives Debian's build; its own download cannot work here)
APT_PACKAGES := libzbar0,libzbar0t64 postgresql fonts-wqy-microhei mosquitto chromium
PYTHON ?= python3
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_PREFERENCE := only-system
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help demo test bench lint check-format typecheck pytest system-deps venv clean

help:
	@echo "make demo   - the whole resort on one machine: cloud, brokers, two gates, skiers; the cloud link cut and restored"
	@echo "make test   - ruff, mypy and the test suite"
	@echo "make bench  - benchmarks (python -m bench.admission)"

system-deps:
	@missing=""; first=""; \
	for p in $(APT_PACKAGES); do \
	  ok=""; \
	  for alt in $${p//,/ }; do \
	    dpkg-query -W -f='$${Status}' $$alt 2>/dev/null | grep -q "install ok installed" && ok=1; \
	  done; \
	  [ -n "$$ok" ] || { missing="$$missing $$p"; first="$$first $${p%%,*}"; }; \
	done; \
	if ! $(PYTHON) -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then \
	  missing="$$missing python3 python3-venv"; first="$$first python3 python3-venv"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq || exit 1; \
	    pkgs=""; \
	    for p in $$missing; do \
	      pick=""; \
	      for alt in $${p//,/ }; do \
	        [ -z "$$pick" ] && apt-cache show $$alt >/dev/null 2>&1 && pick=$$alt; \
	      done; \
	      pkgs="$$pkgs $${pick:-$${p%%,*}}"; \
	    done; \
	    echo "installing:$$pkgs"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs; \
	  else \
	    echo "missing Debian packages; run: sudo apt-get install --no-install-recommends$$first"; exit 1; \
	  fi; \
	fi

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python $$(command -v $(PYTHON))
	@touch $@

venv: system-deps $(VENV)/.synced

demo: venv
	$(VENV)/bin/starfish demo --duration 60 --cut-at 20 --restore-at 40

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest

test: lint typecheck pytest

bench: venv
	$(PY) -m bench.admission

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
