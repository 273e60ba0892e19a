PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help install test test-fast quickstart bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install lifelong with everything it needs

test: $(STAMP)  ## the whole test suite (installs first when needed)
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## the suite without the slow end-to-end runs
	$(PY) -m pytest -q -m "not slow"

quickstart: $(STAMP)  ## LwF on split digits, offline, on CPU
	$(PY) train.py experiment=quickstart

bench: $(STAMP)  ## training and evaluation throughput
	$(PY) scripts/benchmark.py

clean:  ## remove run directories and caches
	rm -rf outputs multirun .pytest_cache
