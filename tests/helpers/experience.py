"""Experiences built by hand, for tests of objectives and of the update without a rollout engine."""

from __future__ import annotations

import torch

from methods.grpo import group_advantages
from rlsd_lab.experience import Experience
from rlsd_lab.rollout import RolloutBatch


def rollout_with_mask(response_mask: torch.Tensor) -> RolloutBatch:
    """A RolloutBatch of pad tokens with this response mask (for objectives, which read only masks)."""
    rows, length = response_mask.shape
    zeros = torch.zeros(rows, length, dtype=torch.long)
    return RolloutBatch(prompt_ids=zeros[:, :1], prompt_mask=torch.ones_like(zeros[:, :1]), response_ids=zeros,
                        response_mask=response_mask.float(), logprobs=torch.zeros(rows, length),
                        finished=torch.ones(rows, dtype=torch.bool))


def experience(rewards, *, rollout: RolloutBatch | None = None, response_mask: torch.Tensor | None = None,
               group_size: int = 2, delta: torch.Tensor | None = None, scale_by_std: bool = True, step: int = 0,
               **fields) -> Experience:
    """An Experience of `rewards` [B] on `rollout` (or a pad-only one with `response_mask`, else all ones like
    `delta`), its group advantages computed as the pipeline does."""
    rewards = torch.as_tensor(rewards, dtype=torch.float)
    if rollout is None:
        mask = response_mask if response_mask is not None else torch.ones_like(delta)
        rollout = rollout_with_mask(mask)
    if delta is not None:
        delta = delta * rollout.response_mask
    fields = {"problems": [], "texts": [], "verdicts": [], **fields}
    return Experience(step=step, group_size=group_size, rollout=rollout, rewards_B=rewards,
                      sequence_advantages_B=group_advantages(rewards, group_size, scale_by_std), delta_B_T=delta,
                      **fields)


def with_advantages(objective, built: Experience) -> Experience:
    """`built` with the objective's token advantages, as make_experience ends."""
    from dataclasses import replace

    advantages, metrics = objective.token_advantages(built)
    return replace(built, advantages=advantages, advantage_metrics=metrics)
