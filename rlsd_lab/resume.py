"""What an exact resume needs beyond Lightning's checkpoint (weights, optimiser, LR schedule, loop progress).

- RNG states (`rng_state` / `set_rng_state`): python `random`, numpy, torch CPU and CUDA, and the trainer's own
  generators (the rollout engine's, the mini-batch shuffle's). Lightning saves none of them.
- Data order (`EpochBatchSampler`): epoch e's permutation is a function of (seed, e) alone and iteration starts at
  any batch, so a resumed run continues mid-epoch with the batches the interrupted run would have drawn. A
  DataLoader with `shuffle=True` would draw a fresh permutation from a generator whose state is lost; the
  permutations are the ones that loader drew, so runs from before resume support are reproduced.
- metrics.csv (`MetricsCSV`): Lightning's CSVLogger deletes an existing metrics.csv; this logger keeps the resumed
  run's rows up to its checkpoint's step, and the run logs the later ones again.
- `find_checkpoint`: `resume=auto` picks the checkpoint of the latest step in the run directory's checkpoints/.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "rlsd_lab"  # the trainer's own state in a Lightning checkpoint (RLModule.on_save_checkpoint)


# ---- RNG states ------------------------------------------------------------------------------------------------
def rng_state(generators: dict[str, torch.Generator]) -> dict:
    """Every RNG state of this process; numpy's as plain lists, so that checkpoints load with `weights_only`."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), position, has_gauss, cached),
             "torch": torch.get_rng_state(), "generators": {k: g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    for key, generator in generators.items():
        if key in state["generators"]:  # a checkpoint from before a generator existed leaves it at its seed
            generator.set_state(state["generators"][key])


# ---- data order ------------------------------------------------------------------------------------------------
def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """Epoch `epoch`'s permutation of range(size), replayed from the seed: the one that `DataLoader(shuffle=True,
    generator=torch.Generator().manual_seed(seed))` draws under Lightning, which takes `len(loader)` batches from a
    new iterator per epoch. Each iterator takes one number from the generator (its base seed), then its
    RandomSampler draws the permutation."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epoch + 1):
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        order = torch.randperm(size, generator=generator)
    return order


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of `batch_size` indices of a shuffled range(size), epoch after epoch (the incomplete last batch of
    an epoch is dropped). `start`: batches already consumed, so that iteration resumes where a run stopped.

    Lightning asks for an iterator at every epoch; each yields the rest of the current epoch.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0):
        if size < batch_size:
            raise ValueError(f"{size} training problems cannot fill one step of data.prompts_per_step={batch_size}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.batches_per_epoch = size // batch_size
        self.position = start

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self):
        epoch, offset = divmod(self.position, self.batches_per_epoch)
        order = epoch_order(self.size, self.seed, epoch)
        for batch in range(offset, self.batches_per_epoch):
            self.position += 1
            yield order[batch * self.batch_size:(batch + 1) * self.batch_size].tolist()


# ---- checkpoints -----------------------------------------------------------------------------------------------
def checkpoint_step(path: Path) -> int:
    """The number of RL steps done when `path` was saved."""
    checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return int(checkpoint[CHECKPOINT_KEY]["rollout_step"])


def find_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """`resume`: null (a fresh run), `auto` (the latest checkpoint in `run_dir`/checkpoints, or a fresh run when
    there is none) or the path of a .ckpt file. An unreadable checkpoint (a copy cut short) is passed over."""
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume={resume}: no such checkpoint file (use resume=auto or a .ckpt path)")
        return path
    steps = {}
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        try:
            steps[path] = checkpoint_step(path)
        except Exception as error:  # noqa: BLE001 - any unreadable file is skipped, with the reason
            log.warning("resume=auto: skipping unreadable checkpoint %s (%s)", path, error)
    if not steps:
        log.info("resume=auto: no checkpoint in %s/checkpoints, starting a fresh run", run_dir)
        return None
    return max(steps, key=steps.get)


def finished_summary(resume: str | None, run_dir: Path, max_steps: int) -> dict | None:
    """With `resume=auto`, the summary of a run in `run_dir` that already trained all `max_steps` steps: a
    relaunched sweep skips it (a run asked for more steps than it has resumes from its checkpoint instead)."""
    path = run_dir / "summary.json"
    if resume != "auto" or not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("final_step") == max_steps else None


# ---- metrics.csv -----------------------------------------------------------------------------------------------
def rows_through_step(path: Path, step: int) -> list[dict[str, str]]:
    """The rows of `path` up to the row of `step`, in file order. Rows after it (logged after the checkpoint, the
    last one maybe cut by a kill) are dropped: the resumed run logs those steps again."""
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            if int(row["step"]) > step:
                break
            rows.append(row)
            if int(row["step"]) == step:
                break
    return rows


class MetricsCSV(Logger):
    """metrics.csv in Lightning's CSVLogger layout (a `step` column, the others sorted, one row per log call).

    Rows are appended every `flush_every` steps, at each checkpoint and at the end. A new column rewrites the file
    through a temporary file and a rename, so a kill never loses rows already written. The first write replaces
    an earlier file, keeping only, when resuming from step `resume_step`, its rows up to that step.
    """

    def __init__(self, path: Path, flush_every: int, resume_step: int | None = None):
        super().__init__()
        self.path, self.flush_every, self.resume_step = Path(path), flush_every, resume_step
        self.columns: list[str] | None = None  # None until the first write
        self.pending: list[dict] = []

    @property
    def name(self) -> str:
        return "metrics"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """Nothing: the run directory holds the resolved config (config_resolved.yaml)."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.pending.append({**metrics, "step": step})
        if (step + 1) % self.flush_every == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self.pending:
            return
        if self.columns is None:
            earlier = [] if self.resume_step is None else rows_through_step(self.path, self.resume_step)
            self._rewrite(earlier + self.pending)
        elif set().union(*self.pending) - set(self.columns):
            with self.path.open(newline="") as file:
                self._rewrite(list(csv.DictReader(file)) + self.pending)
        else:
            with self.path.open("a", newline="") as file:
                csv.DictWriter(file, self.columns).writerows(self.pending)
        self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    def _rewrite(self, rows: list[dict]) -> None:
        self.columns = sorted(set().union(*rows))
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", newline="") as file:
            writer = csv.DictWriter(file, self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, self.path)
