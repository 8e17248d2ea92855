"""A Hydra callback (conf/config.yaml `hydra.callbacks`): one line per finished job of a sweep.

    [sweep] 3/8 done (0 failed): job 2 method.eps_w=0.5 seed=2 finished, returned 0.912 in 41 s; elapsed 2m10s,
    about 3m30s left

Wherever the job ran (this process, a joblib worker, a SLURM node), its line is appended under a file lock to
`<sweep dir>/progress.jsonl`. The count k, the elapsed time and the estimate are read back from that file, so
they are right with jobs running in parallel. The estimate is elapsed / k x (N - k). N comes from the sweep's
overrides (basic sweeper) or `n_trials` (optuna); a relaunched sweep starts a new count. (Hydra turns
a callback's exception into a warning, so checks that must stop a sweep live in the job: rlsd_lab/launchers.py.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import DictConfig

log = logging.getLogger("rlsd_lab.sweep")
PROGRESS = "progress.jsonl"
START = ".sweep_start.json"


def swept_overrides(config: DictConfig) -> list:
    """The sweeper's `params` and the command line's overrides, parsed."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    return OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))


def sweep_size(config: DictConfig) -> int | None:
    """The number of jobs the sweeper will launch: optuna's n_trials, or the basic sweeper's product of the
    swept values; None for another sweeper."""
    target = str(config.hydra.sweeper.get("_target_", ""))
    if "optuna" in target.lower():
        return int(config.hydra.sweeper.n_trials)
    if "BasicSweeper" not in target:
        return None
    return len(BasicSweeper.split_arguments(swept_overrides(config), None)[0])


def swept_keys(config: DictConfig) -> list[str]:
    """The knobs that vary between the sweep's jobs (what a progress line names)."""
    return [o.get_key_element().lstrip("+~") for o in swept_overrides(config) if o.is_sweep_override()]


def job_values(config: DictConfig, keys: list[str]) -> str:
    """This job's values of the swept knobs, e.g. `method=rlsd seed=2`."""
    overrides = [o for o in config.hydra.overrides.task if o.split("=", 1)[0].lstrip("+~") in keys]
    return " ".join(overrides)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def is_rank_zero() -> bool:
    """A data-parallel job reports once (submitit starts one process per rank)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0))) == 0


def append_and_count(path: Path, record: dict) -> list[dict]:
    """Appends `record` to the JSON-lines file under an exclusive lock and returns every record in it."""
    with path.open("a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(json.dumps(record) + "\n")
        file.flush()
        file.seek(0)
        records = [json.loads(line) for line in file if line.strip()]
        fcntl.flock(file, fcntl.LOCK_UN)
    return records


def progress_line(records: list[dict], total: int | None, elapsed: float) -> str:
    last, done = records[-1], len(records)
    failed = sum(r["status"] != "finished" for r in records)
    result = f", returned {last['value']:.3f}" if isinstance(last.get("value"), (int, float)) else ""
    line = (f"[sweep] {done}/{total or '?'} done ({failed} failed): job {last['job']} {last['overrides']} "
            f"{last['status']}{result} in {duration(last['seconds'])}; elapsed {duration(elapsed)}")
    if total and done < total:
        line += f", about {duration(elapsed / done * (total - done))} left"
    return line


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # the optuna sweeper opens its sqlite file here first
        (sweep_dir / PROGRESS).unlink(missing_ok=True)
        (sweep_dir / START).write_text(json.dumps({"started": time.time(), "jobs": sweep_size(config),
                                                   "swept": swept_keys(config)}))

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        self.job_started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or not is_rank_zero():
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        start = json.loads((sweep_dir / START).read_text()) if (sweep_dir / START).exists() else {}
        finished = job_return.status == JobStatus.COMPLETED
        record = {"job": config.hydra.job.num, "overrides": job_values(config, start.get("swept", [])),
                  "status": "finished" if finished else "failed",
                  "value": job_return.return_value if finished else None,
                  "seconds": time.time() - getattr(self, "job_started", time.time())}
        records = append_and_count(sweep_dir / PROGRESS, record)
        line = progress_line(records, start.get("jobs"), time.time() - start.get("started", time.time()))
        print(line, flush=True)
        log.info(line)
