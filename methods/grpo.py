"""GRPO: the verifier's outcome reward, normalised within each prompt's group, credits every token equally.

A = (R - mean_G) / (std_G + eps). With `scale_by_std: false` (Dr. GRPO) A = R - mean_G.
std is the unbiased sample std over the G responses, as in veRL and TRL.
"""

from __future__ import annotations

import torch

from methods.base import Objective, ScoredRollout

EPS = 1e-6


def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True) -> torch.Tensor:
    """[B] sequence advantages for rows grouped `group_size` at a time."""
    if group_size < 2:
        raise ValueError("group-normalised advantages need group_size >= 2")
    grouped = rewards.float().view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (grouped.std(dim=1, keepdim=True) + EPS)
    return centred.reshape(-1)


def zero_variance_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Share of groups whose responses all got the same reward: they give no gradient."""
    grouped = rewards.float().view(-1, group_size)
    return float((grouped.max(dim=1).values == grouped.min(dim=1).values).float().mean())


class GRPO(Objective):
    name = "grpo"

    def sequence_advantages(self, rollout: ScoredRollout) -> torch.Tensor:
        return group_advantages(rollout.rewards, rollout.group_size, self.cfg.scale_by_std)

    def token_advantages(self, rollout: ScoredRollout, step: int):
        advantages = self.sequence_advantages(rollout)
        metrics = {"zero_variance_groups": zero_variance_fraction(rollout.rewards, rollout.group_size),
                   "advantage_abs_mean": float(advantages.abs().mean())}
        return advantages[:, None] * rollout.response_mask, metrics
