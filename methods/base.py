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
    """A verified rollout batch: rows are grouped, `group_size` consecutive rows per prompt.

    `student_logprobs` are log P_S(y_t) under the weights that generated the batch; `teacher_logprobs` the same
    tokens under the privileged (reference-conditioned) prompt, present when the objective uses a teacher.
    `reasoning_mask` marks the tokens before the final-answer span.
    """

    rewards: torch.Tensor  # [B]
    response_mask: torch.Tensor  # [B, T]
    group_size: int
    student_logprobs: torch.Tensor | None = None  # [B, T]
    teacher_logprobs: torch.Tensor | None = None  # [B, T]
    reasoning_mask: torch.Tensor | None = None  # [B, T]

    @property
    def delta(self) -> torch.Tensor:
        """Privileged-information gain Delta_t = log P_T(y_t) - log P_S(y_t), detached, 0 on padding."""
        if self.teacher_logprobs is None or self.student_logprobs is None:
            raise ValueError("Delta needs the teacher pass: this objective must set uses_teacher = True")
        return ((self.teacher_logprobs - self.student_logprobs) * self.response_mask).detach()


@dataclass
class MicroBatch:
    """What the loss sees for one micro-batch: current log-probs carry gradients, the rest is fixed."""

    logprobs: torch.Tensor  # [b, T], with grad
    old_logprobs: torch.Tensor  # [b, T]
    advantages: torch.Tensor  # [b, T] per-token advantage
    entropy: torch.Tensor  # [b, T]
    ref_logprobs: torch.Tensor | None = None  # [b, T] when a KL to a reference policy is used
    delta: torch.Tensor | None = None  # [b, T] when the objective uses a teacher
    divergence: torch.Tensor | None = None  # [b, T] full-vocabulary teacher-student loss, with grad


class Objective(ABC):
    """`cfg` is the method config; `loss_cfg` the shared surrogate config (clip ranges, KL, entropy).

    `uses_teacher`: the trainer runs the teacher pass and fills `ScoredRollout.teacher_logprobs`.
    `token_divergence`: when not None, a function (student_logprobs_full, teacher_logprobs_full) -> [..] that
    the trainer evaluates chunk-wise over the vocabulary into `MicroBatch.divergence`.
    """

    name: str
    uses_teacher = False
    token_divergence = None

    def __init__(self, cfg, loss_cfg):
        self.cfg, self.loss_cfg = cfg, loss_cfg

    @abstractmethod
    def token_advantages(self, rollout: ScoredRollout, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """[B, T] per-token advantage (zero on padding) and metrics about it."""

    def teacher_groups(self, rollout: ScoredRollout) -> torch.Tensor:
        """[prompts] bool: the groups whose teacher log-probs this objective reads (all, unless it knows better)."""
        return torch.ones(rollout.rewards.shape[0] // rollout.group_size, dtype=torch.bool)

    def token_credit(self, rollout: ScoredRollout, step: int, divergence_credit: torch.Tensor | None) -> torch.Tensor:
        """[B, T] effective per-token advantage (rlsd_lab/credit.py); `divergence_credit` is set for objectives
        with a `token_divergence`."""
        return self.token_advantages(rollout, step)[0]

    def loss_terms(self, micro: MicroBatch) -> dict[str, torch.Tensor]:
        """Named [b, T] parts of the loss whose gradient norms are logged separately (hybrids); else empty."""
        return {}

    def surrogate(self, micro: MicroBatch, advantages: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.loss_cfg
        return clipped_surrogate(micro.logprobs, micro.old_logprobs, advantages, cfg.clip_low, cfg.clip_high,
                                 cfg.dual_clip)

    def policy_loss(self, micro: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective's own [b, T] loss and diagnostics; by default the clipped surrogate on the advantages."""
        surrogate = self.surrogate(micro, micro.advantages)
        return surrogate["loss"], {
            "policy_loss": surrogate["loss"].detach(),
            "pg_clipfrac_low": surrogate["clipped_low"],
            "pg_clipfrac_high": surrogate["clipped_high"],
            "pg_clipfrac_dual": surrogate["clipped_dual"],
        }

    def per_token_loss(self, micro: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """[b, T] loss to be aggregated by the trainer, and [b, T] diagnostics it averages over tokens."""
        cfg = self.loss_cfg
        loss, metrics = self.policy_loss(micro)
        metrics["approx_kl_old"] = 0.5 * (micro.logprobs.detach() - micro.old_logprobs) ** 2
        metrics["entropy"] = micro.entropy.detach()
        if micro.ref_logprobs is not None and cfg.kl_coef > 0:
            kl = kl_penalty(micro.logprobs, micro.ref_logprobs, cfg.kl_estimator)
            loss = loss + cfg.kl_coef * kl
            metrics["kl_ref"] = kl.detach()
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * micro.entropy
        return loss, metrics
