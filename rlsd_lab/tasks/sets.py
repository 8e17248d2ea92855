"""Task configs named by overrides: the sets of `python -m rlsd_lab.evaluate` and of `train.val_sets`.

A set is a list of Hydra-style overrides, e.g. `[task=arith, task.digits=4]` or `[task=file,
task.train_path=x.jsonl, task.verifier=math]`. Task configs have no defaults list, so composing one is loading
conf/task/<task>.yaml and applying the values; this also works inside a running Hydra app, where a second Hydra
compose could not start.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rlsd_lab.tasks.problem import Problem

TASK_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "task"


def set_task_config(name: str, overrides: list[str]) -> DictConfig:
    """conf/task/<task>.yaml with a set's `task.key=value` overrides (`+task.key=value` adds a key; a misspelt key
    fails, naming it)."""
    groups = [o.split("=", 1)[1] for o in overrides if o.startswith("task=")]
    path = TASK_CONFIGS / f"{groups[-1] if groups else 'arith'}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"set {name}: no task config {path.name}; choose from "
                                f"{', '.join(sorted(p.stem for p in TASK_CONFIGS.glob('*.yaml')))}")
    values = [o.removeprefix("task.") for o in overrides if o.startswith("task.")]
    added = [o.removeprefix("+task.") for o in overrides if o.startswith("+task.")]
    task = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(added))
    OmegaConf.set_struct(task, True)
    return OmegaConf.merge(task, OmegaConf.from_dotlist(values))


def set_problems(task, count: int | None) -> list[Problem]:
    """The set's validation problems (seed 0: the same for every run), each naming its verifier, so that one
    verifier pool scores sets of different tasks."""
    return [p if p.verifier else dataclasses.replace(p, verifier=task.verifier)
            for p in task.problems("val", count, seed=0)]
