"""Objectives behind one interface (methods/base.py). `build_objective` maps `method.name` to a class."""

from __future__ import annotations

from methods.base import MicroBatch, Objective, ScoredRollout
from methods.grpo import GRPO
from methods.hybrid import Hybrid
from methods.opsd import OPSD
from methods.rlsd import RLSD
from rlsd_lab.choices import check_choice

OBJECTIVES = {"grpo": GRPO, "opsd": OPSD, "hybrid": Hybrid, "rlsd": RLSD}


def build_objective(method_cfg, loss_cfg) -> Objective:
    name = method_cfg.name
    check_choice("method", name, sorted(OBJECTIVES))
    return OBJECTIVES[name](method_cfg, loss_cfg)


__all__ = ["OBJECTIVES", "MicroBatch", "Objective", "ScoredRollout", "build_objective"]
