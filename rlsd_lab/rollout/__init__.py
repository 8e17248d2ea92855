"""Rollout engines behind one interface. `build_engine` maps `rollout.name` to one."""

from __future__ import annotations

from rlsd_lab.choices import check_choice
from rlsd_lab.rollout.base import RolloutBatch, RolloutEngine, SamplingParams
from rlsd_lab.rollout.hf_engine import HFRolloutEngine

ENGINES = {"hf": HFRolloutEngine}


def build_engine(name: str, model, tokenizer, seed: int) -> RolloutEngine:
    check_choice("rollout engine", name, sorted(ENGINES))
    return ENGINES[name](model, tokenizer.pad_token_id, tokenizer.eos_token_id, seed=seed)


__all__ = ["ENGINES", "RolloutBatch", "RolloutEngine", "SamplingParams", "build_engine"]
