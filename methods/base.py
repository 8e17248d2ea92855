"""The interface every objective implements: per-token advantages, then the shared clipped surrogate.

A new objective is one file here subclassing `Objective` (usually overriding only `token_advantages`) plus
one yaml in conf/method/ whose `name` is registered in methods/__init__.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from methods.policy_loss import clipped_surrogate, kl_penalty


@dataclass
class ScoredRollout:
    """A verified rollout batch: rows are grouped, `group_size` consecutive rows per prompt."""

    rewards: torch.Tensor  # [B]
    response_mask: torch.Tensor  # [B, T]
    group_size: int


@dataclass
class MicroBatch:
    """What the loss sees for one micro-batch: current log-probs carry gradients, the rest is fixed."""

    logprobs: torch.Tensor  # [b, T], with grad
    old_logprobs: torch.Tensor  # [b, T]
    advantages: torch.Tensor  # [b, T] per-token advantage
    entropy: torch.Tensor  # [b, T]
    ref_logprobs: torch.Tensor | None = None  # [b, T] when a KL to a reference policy is used


class Objective(ABC):
    """`cfg` is the method config; `loss_cfg` the shared surrogate config (clip ranges, KL, entropy)."""

    name: str

    def __init__(self, cfg, loss_cfg):
        self.cfg, self.loss_cfg = cfg, loss_cfg

    @abstractmethod
    def token_advantages(self, rollout: ScoredRollout, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """[B, T] per-token advantage (zero on padding) and metrics about it."""

    def per_token_loss(self, micro: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """[b, T] loss to be aggregated by the trainer, and [b, T] diagnostics it averages over tokens."""
        cfg = self.loss_cfg
        surrogate = clipped_surrogate(micro.logprobs, micro.old_logprobs, micro.advantages,
                                      cfg.clip_low, cfg.clip_high, cfg.dual_clip)
        loss = surrogate["loss"]
        metrics = {
            "policy_loss": surrogate["loss"].detach(),
            "pg_clipfrac_low": surrogate["clipped_low"],
            "pg_clipfrac_high": surrogate["clipped_high"],
            "pg_clipfrac_dual": surrogate["clipped_dual"],
            "approx_kl_old": 0.5 * (micro.logprobs.detach() - micro.old_logprobs) ** 2,
            "entropy": micro.entropy.detach(),
        }
        if micro.ref_logprobs is not None and cfg.kl_coef > 0:
            kl = kl_penalty(micro.logprobs, micro.ref_logprobs, cfg.kl_estimator)
            loss = loss + cfg.kl_coef * kl
            metrics["kl_ref"] = kl.detach()
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * micro.entropy
        return loss, metrics
