"""Hydra entry point: `python -m rlsd_lab.train method=grpo task=arith seed=1 trainer.max_steps=200`.

Writes into the run directory: `.hydra/` (composed config and overrides), `config_resolved.yaml`, `metrics.csv`
(one row per step; step 0 is the base policy), `checkpoints/` (Lightning), `final_policy/` (save_pretrained; with
LoRA the merged model, and the adapter alone in `final_adapter/`),
`summary.json`, and `train.log`.

`resume=auto` continues the run in the run directory from its latest checkpoint, exactly (rlsd_lab/resume.py):
`python -m rlsd_lab.train <the same overrides> hydra.run.dir=<that run directory> resume=auto`.

Sweeps (`-m`) run through any launcher of conf/hydra/launcher (basic, local_parallel, slurm: rlsd_lab/launchers.py),
print one progress line per finished job (rlsd_lab/sweep_progress.py), and `search.seeds` makes one job train
several seeds and return their mean (rlsd_lab/seed_average.py; the Optuna searches of conf/hparams_search).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from analysis.run_summary import validation_curve, validation_summary
from methods import build_objective
from rlsd_lab.bootstrap import embedded_task, ensure_base_policy
from rlsd_lab.choices import check_choice
from rlsd_lab.config import validate_config
from rlsd_lab.distributed import build_strategy, check_launch
from rlsd_lab.launchers import prepare_job
from rlsd_lab.models import has_adapter, load_model
from rlsd_lab.module import RLModule, check_batch_config, optimizer_steps_per_rollout
from rlsd_lab.resume import EpochBatchSampler, MetricsCSV, checkpoint_step, find_checkpoint, finished_summary
from rlsd_lab.seed_average import train_seeds
from rlsd_lab.sharding import full_state_dict, is_sharded
from rlsd_lab.tasks import build_task
from rlsd_lab.tasks.sets import set_problems, set_task_config
from rlsd_lab.verifiers.pool import VerifierPool

log = logging.getLogger("rlsd_lab")
LOGGERS = ("csv", "wandb")
# Expected here, not problems: checkpoints of a manually optimised module are taken after the optimiser step (the
# state a resume needs), and the data loader does resume mid-epoch, by a sampler Lightning does not know of.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def build_loggers(cfg, run_dir: Path, resume_step: int | None = None) -> list:
    """metrics.csv always (resumed from `resume_step`); plus Weights & Biases with `logger=wandb` (offline unless
    `logger.mode=online`)."""
    check_choice("logger", cfg.logger.name, LOGGERS)
    loggers = [MetricsCSV(run_dir / "metrics.csv", cfg.logger.flush_every, resume_step)]
    if cfg.logger.name == "wandb":
        check_choice("wandb mode", cfg.logger.mode, ("offline", "online"))
        loggers.append(WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, name=run_dir.name,
                                   save_dir=str(run_dir), offline=cfg.logger.mode == "offline",
                                   config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def policy_path(cfg) -> Path:
    """The user's local checkpoint, or the embedded base policy (built and cached on first use).

    The embedded policy is always trained on the arithmetic task: on another task (`task=math_example`, ...) the
    default arithmetic configuration builds it, so every task shares one cached base policy.
    """
    if cfg.model.path:
        return Path(cfg.model.path)
    return ensure_base_policy(cfg.model, embedded_task(cfg.task))


def build_verifier_pool(cfg, task, problems: list) -> VerifierPool:
    """The task's verifier (rows may name their own), checked now so a bad name fails before training."""
    pool = VerifierPool(task.verifier, OmegaConf.to_container(cfg.verify.options), cfg.verify.workers,
                        cfg.verify.timeout_s)
    pool.check([problem.verifier or task.verifier for problem in problems])
    return pool


def extra_val_sets(sets) -> dict[str, list]:
    """`train.val_sets`: name -> its validation problems (each task config's own val_size), logged beside the
    training task's as val/<name>/accuracy, so that in- and out-of-distribution curves share one run."""
    tasks = {name: set_task_config(name, list(overrides)) for name, overrides in sets.items()}
    return {name: set_problems(build_task(task_cfg), task_cfg.val_size) for name, task_cfg in tasks.items()}


def build_trainer(cfg, run_dir: Path, resume_step: int | None = None) -> L.Trainer:
    """`trainer.strategy=ddp|fsdp` with `trainer.devices` x `trainer.num_nodes` ranks trains data parallel
    (rlsd_lab/distributed.py; fsdp also shards the policy: rlsd_lab/sharding.py). Every rank's loader yields the
    global batch and the module takes its share, hence no distributed sampler.

    Checkpoints every `train.checkpoint_every` steps, the latest `train.keep_checkpoints` kept (ranked by step;
    their names count optimiser steps), and `last.ckpt`, a link to the latest."""
    steps_per_rollout = optimizer_steps_per_rollout(cfg)
    checkpoints = ModelCheckpoint(dirpath=run_dir / "checkpoints", every_n_train_steps=cfg.train.checkpoint_every
                                  * steps_per_rollout, monitor="step", mode="max",
                                  save_top_k=cfg.train.keep_checkpoints, save_last="link",
                                  enable_version_counter=False)  # a resumed run overwrites, no `last-v1.ckpt`
    return L.Trainer(max_steps=cfg.trainer.max_steps * steps_per_rollout, accelerator=cfg.trainer.accelerator,
                     strategy=build_strategy(cfg.trainer), devices=cfg.trainer.devices,
                     num_nodes=cfg.trainer.num_nodes, use_distributed_sampler=False, precision=cfg.trainer.precision,
                     logger=build_loggers(cfg, run_dir, resume_step), callbacks=[checkpoints],
                     enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
                     enable_progress_bar=cfg.trainer.progress_bar, default_root_dir=run_dir)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Trains one configuration into `run_dir` and returns the summary it also writes as summary.json.

    Data parallel, rank 0 alone writes the files and the summary; the other ranks return an empty dict.
    `resume` (null | auto | a .ckpt path) continues a run from a checkpoint: rlsd_lab/resume.py.
    """
    validate_config(cfg)  # every bad value at once, before anything is built
    finished = finished_summary(cfg.resume, run_dir, cfg.trainer.max_steps)
    if finished is not None:  # a relaunched sweep: this job is done
        log.info("resume=auto: %s finished all %d steps already (summary.json): skipped", run_dir,
                 cfg.trainer.max_steps)
        return finished
    checkpoint = find_checkpoint(cfg.resume, run_dir)
    resume_step = checkpoint_step(checkpoint) if checkpoint else None
    trainer = build_trainer(cfg, run_dir, resume_step)  # early: it knows this process's data-parallel rank
    check_batch_config(cfg, trainer.world_size)
    check_launch(cfg, trainer.world_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:
        (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    objective = build_objective(cfg.method, cfg.loss)
    task = build_task(cfg.task)
    # Problems and verifiers before the model: a configuration error stops the run before a base policy is built.
    train_problems = task.problems("train", cfg.task.train_size, seed=cfg.seed)
    # One validation set for every seed, so that runs are compared on the same problems.
    val_problems = task.problems("val", cfg.task.val_size, seed=0)
    val_sets = extra_val_sets(cfg.train.val_sets or {})
    verifier = build_verifier_pool(cfg, task, train_problems + val_problems + sum(val_sets.values(), []))
    # The same seeded order on every rank: each step's global batch of prompts (data.prompts_per_step), continued
    # from the checkpoint's step. The loader's own generator: its iterators draw a seed, not from torch's global RNG.
    sampler = EpochBatchSampler(len(train_problems), cfg.data.prompts_per_step, cfg.seed, start=resume_step or 0)
    loader = torch.utils.data.DataLoader(range(len(train_problems)), batch_sampler=sampler, generator=torch.Generator())
    model, tokenizer = load_model(cfg.model, policy_path(cfg), cfg.trainer.accelerator)
    model.train()  # from_pretrained returns eval mode
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = RLModule(cfg, model, tokenizer, objective, verifier, train_problems, val_problems, run_dir,
                      rank=trainer.global_rank, error_locator=getattr(task, "first_error", None), val_sets=val_sets)
    if checkpoint:
        log.info("resuming from %s (step %d)", checkpoint, resume_step)
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    started = time.time()
    try:
        trainer.fit(module, loader, ckpt_path=checkpoint)
    finally:
        verifier.close()  # also when training stops with an error (Lightning then skips the module's teardown)
    final_weights = full_state_dict(model) if is_sharded(model) else None  # fsdp: every rank takes part
    if not trainer.is_global_zero:
        return {}
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # flush the wandb run file now (Lightning leaves the run open)
    if has_adapter(model):  # LoRA: the adapter alone, then the merged model every consumer can load
        model.save_pretrained(run_dir / "final_adapter")
        tokenizer.save_pretrained(run_dir / "final_adapter")
        model = model.merge_and_unload()
    model.save_pretrained(run_dir / "final_policy", state_dict=final_weights)
    tokenizer.save_pretrained(run_dir / "final_policy")
    summary = summarize(run_dir / "metrics.csv", cfg, time.time() - started)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summarize(metrics_csv: Path, cfg, seconds: float) -> dict:
    return {"method": cfg.method.name, "task": cfg.task.name, "seed": cfg.seed, "steps": cfg.trainer.max_steps,
            "train_seconds": round(seconds, 1), **validation_summary(metrics_csv)}


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Trains one run (or, with `search.seeds`, one run per seed) and returns `search.metric` to the sweeper."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    prepare_job(cfg)  # a sweep job's share of the machine: rlsd_lab/launchers.py
    if cfg.search.seeds:
        average = train_seeds(cfg, run_dir, run)
        if average:
            log.info("done: %s", json.dumps(average))
            print(f"[rlsd_lab] {average['method']} seeds {average['seeds']}: {cfg.search.metric} "
                  f"{average[cfg.search.metric]:.3f} (seed std {average['seed_std']:.3f}); job dir {run_dir}")
        return average.get(cfg.search.metric, float("nan"))
    summary = run(cfg, run_dir)
    if not summary:  # a data-parallel rank other than 0: rank 0 reports
        return float("nan")
    log.info("done: %s", json.dumps(summary))
    curve = validation_curve(run_dir / "metrics.csv")
    print("[rlsd_lab] validation accuracy by step: " + ", ".join(f"{s}: {a:.3f}" for s, a in curve.items()))
    print(f"[rlsd_lab] {summary['method']} seed={summary['seed']}: validation accuracy "
          f"{summary['val_accuracy_start']:.3f} -> {summary['val_accuracy_final']:.3f} "
          f"(best {summary['val_accuracy_best']:.3f}) in {summary['train_seconds']:.0f} s; run dir {run_dir}")
    return summary[cfg.search.metric]


if __name__ == "__main__":
    main()
