"""How one job of a Hydra sweep shares the machine, and where its data-parallel ranks come from.

Launchers (conf/hydra/launcher/, the Hydra plugins hydra-joblib-launcher and hydra-submitit-launcher):

- `basic` (Hydra's default): jobs one after another in this process.
- `local_parallel` (joblib): `hydra.launcher.n_jobs` jobs at once on one machine. Each job gets its share of the
  CPU threads (`threads`, default cores / n_jobs; jobs x threads above the cores is refused). On a GPU node each
  job gets a GPU of its own: one job per GPU runs at once and the others queue. A job process claims a free GPU
  (an exclusive lock on `<sweep dir>/.gpu_slots/<i>`) and keeps it while it lives, then sets
  `CUDA_VISIBLE_DEVICES` to it before CUDA starts. A slot by job index (job mod GPUs) would put two jobs on one
  GPU as soon as jobs finish out of order.
- `slurm` / `submitit_local` (submitit): a job per array task. A job cut by preemption or its time limit is
  requeued (`hydra.launcher.max_num_timeout`) and runs again in its directory. There `resume: null` acts as
  `auto`, so it continues from its last checkpoint (a first attempt has none and starts fresh).
  `trainer.strategy=ddp` works here: submitit starts one task per rank (`tasks_per_node` = devices), and Lightning
  joins them instead of relaunching the command.

Lightning's DDP under the basic or joblib launcher re-runs the whole command once per rank, so every rank would
start the sweep again (Lightning #11300, hydra #2070). It is refused at start: `distributed.check_launch`.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import multiprocessing
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rlsd_lab.config import ConfigError

log = logging.getLogger("rlsd_lab")
VISIBLE_GPUS_ENV = "RLSD_LAB_SWEEP_GPUS"  # the sweep's GPUs as seen at launch (jobs narrow CUDA_VISIBLE_DEVICES)
_held_gpu: dict = {}  # this process's GPU: {"gpu": id, "lock": the open lock file, held while the process lives}


def launcher_kind() -> str | None:
    """basic | joblib | submitit for a job of a multirun; None for a single run (or outside Hydra)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    target = str(HydraConfig.get().launcher.get("_target_", ""))
    if "joblib" in target.lower():
        return "joblib"
    return "submitit" if "submitit" in target.lower() else "basic"


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def uses_cuda(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator != "auto":
        return False
    import torch
    return torch.cuda.is_available()


def visible_gpus() -> list[str]:
    """The GPUs this sweep may use, as seen by the first process that asks (later jobs narrow their own
    CUDA_VISIBLE_DEVICES; the launcher's view is kept in an environment variable the workers inherit)."""
    if VISIBLE_GPUS_ENV not in os.environ:
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        if listed is not None:
            gpus = [g for g in listed.split(",") if g.strip()]
        else:
            import torch
            gpus = [str(i) for i in range(torch.cuda.device_count())]
        os.environ[VISIBLE_GPUS_ENV] = ",".join(gpus)
    return [g for g in os.environ[VISIBLE_GPUS_ENV].split(",") if g]


def parallel_jobs(accelerator: str, threads: int) -> int:
    """`hydra/launcher=local_parallel`'s default n_jobs: one job per GPU on a GPU node, else one per `threads`
    cores (threads 0: one job per core)."""
    if uses_cuda(str(accelerator)):
        return max(1, len(visible_gpus()))
    return max(1, cpu_cores() // max(1, int(threads)))


def digest(text: str) -> str:
    """8 hex digits naming `text`: conf/hparams_search names a trial's directory by its overrides this way (the
    overrides themselves are too long for a file name; the same values give the same directory, so a relaunched
    search reuses a trial it already trained)."""
    return hashlib.sha256(str(text).encode()).hexdigest()[:8]


OmegaConf.register_new_resolver("rlsd_lab.parallel_jobs", parallel_jobs, replace=True)
OmegaConf.register_new_resolver("rlsd_lab.digest", digest, replace=True)


def concurrent_jobs(launcher: DictConfig) -> int:
    n_jobs = int(launcher.n_jobs)
    return cpu_cores() if n_jobs < 0 else n_jobs  # joblib: -1 means one per core


def check_parallel_resources(cfg: DictConfig, launcher: DictConfig) -> None:
    """Refuses a local_parallel sweep that would oversubscribe the machine: more threads than cores, or more jobs
    at once than GPUs."""
    n_jobs, cores = concurrent_jobs(launcher), cpu_cores()
    if cfg.threads and cfg.threads * n_jobs > cores:
        raise ConfigError(f"threads={cfg.threads} with hydra.launcher.n_jobs={n_jobs} asks for "
                          f"{cfg.threads * n_jobs} CPU threads on {cores} cores: lower one of them "
                          f"(threads=0 gives each job cores / n_jobs = {max(1, cores // n_jobs)})")
    if uses_cuda(cfg.trainer.accelerator) and n_jobs > len(visible_gpus()):
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs} jobs at once but {len(visible_gpus())} GPUs: one job "
                          f"per GPU (the others queue), so set hydra.launcher.n_jobs<={len(visible_gpus())}")


def claim_gpu(slot_dir: Path, gpus: list[str]) -> str:
    """A GPU no other live process of this sweep holds: an exclusive, non-blocking lock on one slot file per GPU.
    The lock is released when the process exits (or dies), so the slot goes to the next worker."""
    if _held_gpu:
        return _held_gpu["gpu"]
    slot_dir.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        handle = open(slot_dir / f"{gpu}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held_gpu.update(gpu=gpu, lock=handle)
        return gpu
    raise RuntimeError(f"every GPU of this sweep ({','.join(gpus)}) is held by another job: hydra.launcher.n_jobs "
                       "must not exceed the number of GPUs")


def prepare_job(cfg: DictConfig) -> None:
    """Applies the launcher's share of the machine to this job (threads, GPU, requeue resume, data-parallel ranks)
    before anything is built, and logs what it decided (`threads` also lands in config_resolved.yaml)."""
    kind = launcher_kind()
    if kind == "joblib":
        # loky names its own start method in its workers; a process this job starts (the verifier pool's
        # forkserver) inherits that name and cannot resolve it, so the job goes back to the platform's default
        multiprocessing.set_start_method(None, force=True)
        launcher = HydraConfig.get().launcher
        check_parallel_resources(cfg, launcher)
        n_jobs = concurrent_jobs(launcher)
        cfg.threads = cfg.threads or max(1, cpu_cores() // n_jobs)
        shares = {"launcher": kind, "concurrent_jobs": n_jobs, "threads": cfg.threads, "cores": cpu_cores()}
        if uses_cuda(cfg.trainer.accelerator):
            sweep_dir = Path(HydraConfig.get().sweep.dir)
            shares["gpu"] = os.environ["CUDA_VISIBLE_DEVICES"] = claim_gpu(sweep_dir / ".gpu_slots", visible_gpus())
        log.info("local_parallel job: %s", shares)
    elif kind == "submitit":
        if cfg.resume is None:  # a requeued job runs again in its directory: continue from its checkpoint
            cfg.resume = "auto"
        export_submitit_ranks(cfg)
        log.info("submitit job: resume=%s", cfg.resume)


def export_submitit_ranks(cfg: DictConfig) -> None:
    """Data parallel inside a submitit job: one task per rank. Under SLURM, Lightning reads the ranks from SLURM's
    variables itself; elsewhere (submitit_local) the torch.distributed variables are exported from submitit's job
    environment, and Lightning joins the running tasks instead of starting processes."""
    ranks = cfg.trainer.devices * cfg.trainer.num_nodes
    if ranks == 1:
        return
    launcher = HydraConfig.get().launcher
    tasks = int(launcher.tasks_per_node) * int(launcher.get("nodes", 1))
    if tasks != ranks:
        raise ConfigError(f"trainer.devices x trainer.num_nodes = {ranks} data-parallel ranks but the submitit job "
                          f"has {tasks} tasks (hydra.launcher.tasks_per_node x nodes): submitit starts the ranks, "
                          "so set tasks_per_node to trainer.devices and nodes to trainer.num_nodes")
    if "SLURM_NTASKS" not in os.environ:
        import submitit
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
