"""Tasks: where problems come from. `build_task` maps a Hydra `task` config to a task object."""

from __future__ import annotations

from rlsd_lab.choices import check_choice
from rlsd_lab.tasks.arith import ArithTask
from rlsd_lab.tasks.problem import Problem

TASKS = {"arith": ArithTask}
# Keys of a task config that size the data rather than describe the generator.
SIZE_KEYS = ("name", "train_size", "val_size")


def build_task(task_cfg) -> ArithTask:
    name = task_cfg["name"]
    check_choice("task", name, sorted(TASKS))
    params = {k: v for k, v in dict(task_cfg).items() if k not in SIZE_KEYS}
    if "operators" in params:
        params["operators"] = tuple(params["operators"])
    return TASKS[name](**params)


__all__ = ["ArithTask", "Problem", "TASKS", "build_task"]
