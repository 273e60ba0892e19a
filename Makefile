PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Exact versions for every package (pip constraints); `make install CONSTRAINTS=` installs from
# pyproject.toml's ranges alone (e.g. on Python 3.10, which numpy 2.4 no longer supports).
CONSTRAINTS ?= constraints.txt

.PHONY: help install lock fashion-mnist test test-fast quickstart bench gpu-bench gpu-bench-dry fmnist-benchmark clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install lifelong with everything it needs, at constraints.txt's versions

lock: $(STAMP)  ## after upgrading .venv on purpose: write its versions to constraints.txt
	@{ sed -n '1,/^# Refresh/p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^pip=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && touch $(STAMP)

FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

fashion-mnist:  ## real Fashion-MNIST, offline: Debian's dataset-fashion-mnist (apt-get, as root) when missing
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing dataset-fashion-mnist (apt-get)..."; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
		|| echo "apt-get could not install dataset-fashion-mnist: its end-to-end test is skipped"; \
	fi

test: $(STAMP) fashion-mnist  ## the whole test suite (installs first when needed), a worker per core
	$(PY) -m pytest -q -n auto --dist loadfile

test-fast: $(STAMP)  ## the suite without the slow end-to-end runs
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"

quickstart: $(STAMP)  ## LwF on split digits, offline, on CPU
	$(PY) train.py experiment=quickstart

bench: $(STAMP)  ## throughput against a bare PyTorch loop, checkpoint and evaluation shares, fixed cost (CPU)
	$(PY) scripts/benchmark.py --threads 1
	$(PY) scripts/benchmark.py --threads 1 --shares
	$(PY) scripts/bench_fixed_cost.py

gpu-bench: $(STAMP)  ## every GPU figure of the README's speed section (one GPU, a few minutes)
	PYTHON=$(PY) bash scripts/gpu_bench.sh

gpu-bench-dry: $(STAMP)  ## gpu-bench's every step once at toy sizes on the CPU: checks it runs
	PYTHON=$(PY) bash scripts/gpu_bench.sh --dry-run

fmnist-benchmark: $(STAMP) fashion-mnist  ## the README's Fashion-MNIST table: methods x 3 seeds, aggregated
	PYTHON=$(PY) scripts/fmnist_benchmark.sh

clean:  ## remove run directories and caches
	rm -rf outputs multirun .pytest_cache
