"""Objectives behind one interface (methods/base.py). Every module of this package is imported here, so that its
`@register_objective` runs: a new objective is a new file, and nothing here changes."""

from __future__ import annotations

import importlib
import pkgutil

from methods.base import OBJECTIVES, LossOutput, MicroBatch, Needs, Objective
from rlsd_lab.config import LossConfig, group_problems, method_problems, raise_problems, typed

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_objective(method_cfg, loss_cfg) -> Objective:
    """The objective `method_cfg.name` names, its config typed and checked first (ConfigError naming each bad key)."""
    raise_problems(method_problems(method_cfg) + group_problems(loss_cfg, LossConfig, "loss"))
    objective = OBJECTIVES[method_cfg.name]
    return objective(typed(method_cfg, objective.config), typed(loss_cfg, LossConfig))


__all__ = ["OBJECTIVES", "LossOutput", "MicroBatch", "Needs", "Objective", "build_objective"]
