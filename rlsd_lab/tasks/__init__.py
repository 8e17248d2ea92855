"""Tasks: where problems come from. `build_task` maps a Hydra `task` config to a task object.

Every task has `problems(split, count, seed)` and a default `verifier` name for problems that name none.
"""

from __future__ import annotations

from rlsd_lab.choices import check_choice
from rlsd_lab.tasks.arith import ArithTask
from rlsd_lab.tasks.dataset import DataError, FileTask, load_problems
from rlsd_lab.tasks.problem import Problem

TASKS = {"arith": ArithTask, "file": FileTask}
# Keys of a task config that size the data rather than describe the generator (null = all rows for file tasks).
SIZE_KEYS = ("name", "train_size", "val_size")


def build_task(task_cfg) -> ArithTask | FileTask:
    name = task_cfg["name"]
    check_choice("task", name, sorted(TASKS))
    params = {k: v for k, v in dict(task_cfg).items() if k not in SIZE_KEYS}
    if "operators" in params:
        params["operators"] = tuple(params["operators"])
    return TASKS[name](**params)


__all__ = ["TASKS", "ArithTask", "DataError", "FileTask", "Problem", "build_task", "load_problems"]
