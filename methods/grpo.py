"""GRPO: the verifier's outcome reward, normalised within each prompt's group, credits every token equally.

A = (R - mean_G) / (std_G + eps). With `scale_by_std: false` (Dr. GRPO) A = R - mean_G.
std is the unbiased sample std over the G responses, as in veRL and TRL. The pipeline computes A once per step
(Experience.sequence_advantages_B) with this objective's `scale_by_std`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base import MethodConfig, Needs, Objective, register_objective

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


@dataclass
class GRPOConfig(MethodConfig):
    scale_by_std: bool = True  # false + loss.aggregation=seq-mean-token-sum-norm: Dr. GRPO


@register_objective("grpo", GRPOConfig)
class GRPO(Objective):
    def __init__(self, cfg, loss_cfg):
        super().__init__(cfg, loss_cfg)
        self.needs = Needs(scale_by_std=cfg.scale_by_std)

    def token_advantages(self, experience):
        advantages = experience.sequence_advantages_B
        metrics = {"zero_variance_groups": zero_variance_fraction(experience.shaped_rewards_B, experience.group_size),
                   "advantage_abs_mean": float(advantages.abs().mean())}
        return advantages[:, None] * experience.response_mask_B_T, metrics
