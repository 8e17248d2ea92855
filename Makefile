# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# CPU install: torch is pinned to 2.13.0 (a local CPU build; an unpinned torch pulls GBs of CUDA wheels).
# GPU install: `make setup TORCH_SPEC=torch` (or install your CUDA torch into .venv first, then `make setup`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Builds (or reuses) the embedded base policy, trains GRPO on it, prints base vs final validation accuracy.
demo: setup
	$(PY) -m rlsd_lab.train experiment=demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/rollout_speed.py --out bench_results/rollout_speed.json
	$(PY) benchmarks/method_cost.py --out bench_results/method_cost.json

clean:
	rm -rf runs multirun outputs bench_results
