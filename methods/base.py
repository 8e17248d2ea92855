"""The interface every objective implements, and the registry that finds them.

An objective declares what it needs from the pipeline as data (`Needs`: a teacher and which reference, a
full-vocabulary divergence, which groups the teacher must score) and implements two calls:

- `token_advantages(experience)`: [B, T] per-token advantages (or, for a combination, one per part) from the
  step's Experience (rlsd_lab/experience.py), plus metrics about them;
- `per_token_loss(micro)`: the [b, T] loss of one micro-batch, plus [b, T] diagnostics;
- optionally `teacher_references(experience)`: a reference block per row, for a teacher whose prompt depends on
  the rollout (SDPO shows it a successful response of the group).

The trainer does the rest (rollout, verification, the teacher pass, aggregation over micro-batches, the KL and
entropy regularisers, the optimiser). The credit a method gives each token (rlsd_lab/credit.py) is read off the
same two calls: minus the derivative of the per-token loss with respect to the token's log-prob.

A new objective is one file here (a subclass decorated with `@register_objective(name, ConfigDataclass)`; every
module of this package is imported by methods/__init__.py) plus one yaml in conf/method/ that names its schema.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from hydra.core.config_store import ConfigStore

from methods.policy_loss import cispo_surrogate, clipped_surrogate, sequence_log_ratio
from rlsd_lab.config import TeacherConfig, bounded

Advantages = torch.Tensor | Mapping[str, torch.Tensor]  # [B, T], or one [B, T] per part of a combination

@dataclass(frozen=True)
class Needs:
    """What an objective asks the pipeline for, beyond the rollout and the verifier's rewards.

    `teacher`: run the teacher pass with this teacher (Experience.delta_B_T). `divergence`: a per-token function
    (student_logprobs_V, teacher_logprobs_V) -> loss, evaluated over the full vocabulary chunk by chunk into
    MicroBatch.divergence (the teacher's hidden states are kept for it). `teacher_groups`: which groups the
    teacher scores (all; informative = A != 0; negative = A < 0). `scale_by_std`: the group normalisation of A.
    `reasoning_mask`: Experience.reasoning_mask_B_T, the tokens before the answer span.
    """

    teacher: TeacherConfig | None = None
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    teacher_groups: str = "all"
    scale_by_std: bool = True
    reasoning_mask: bool = False


@dataclass(frozen=True)
class MicroBatch:
    """What the loss sees of `b` responses: current log-probs (and divergence) carry gradients, the rest is fixed."""

    logprobs: torch.Tensor  # [b, T] log pi_theta(y_t), with grad
    old_logprobs: torch.Tensor  # [b, T] log pi_old(y_t)
    advantages: Advantages  # [b, T] (or one per part), from token_advantages
    response_mask: torch.Tensor  # [b, T]
    is_weights: torch.Tensor | None = None  # [b, T] engine-mismatch importance weights (rollout.tis_cap)
    delta: torch.Tensor | None = None  # [b, T] log P_T(y_t) - log P_S(y_t), when a teacher ran
    divergence: torch.Tensor | None = None  # [b, T] Needs.divergence, with grad


class LossOutput(NamedTuple):
    loss: torch.Tensor  # [b, T]
    metrics: dict[str, torch.Tensor]  # [b, T] each, averaged over tokens by the trainer
    terms: dict[str, torch.Tensor] = {}  # named [b, T] parts whose gradient norms are logged (combinations)


@dataclass
class MethodConfig:
    """The fields every conf/method/*.yaml has."""

    name: str = ""
    lr: float = bounded(1e-4, 0.0, help="AdamW learning rate; 0 measures without moving the weights")


class Objective(ABC):
    """`cfg` is the method config (typed by the class's `config` schema); `loss_cfg` the shared surrogate's."""

    name: str
    config: type = MethodConfig

    def __init__(self, cfg, loss_cfg):
        self.cfg, self.loss_cfg = cfg, loss_cfg
        self.needs = Needs()

    @abstractmethod
    def token_advantages(self, experience) -> tuple[Advantages, dict[str, float]]:
        """Per-token advantages (zero on padding) and metrics about them."""

    def teacher_references(self, experience) -> list[str] | None:
        """One reference block per row for the teacher's prompt, when an objective builds them from the rollout
        (SDPO: a successful response of the same group); "" scores the row on the student's prompt. None (the
        default): the problems' own references (`Needs.teacher.reference`), one prompt per group."""
        return None

    def per_token_loss(self, micro: MicroBatch) -> LossOutput:
        """By default the clipped surrogate on the micro-batch's advantages."""
        surrogate = self.surrogate(micro, micro.advantages)
        return LossOutput(surrogate["loss"], {
            "policy_loss": surrogate["loss"].detach(),
            "pg_clipfrac_low": surrogate["clipped_low"],
            "pg_clipfrac_high": surrogate["clipped_high"],
            "pg_clipfrac_dual": surrogate["clipped_dual"],
        })

    def surrogate(self, micro: MicroBatch, advantages: torch.Tensor) -> dict[str, torch.Tensor]:
        """The shared policy-gradient surrogate on `advantages` (`loss.surrogate`: PPO's clip or CISPO; `loss.ratio`:
        per token, or GSPO's per sequence with its own clip), importance-weighted toward the engine's policy: the
        surrogate is positively homogeneous in the advantage, so scaling A_t by w_t >= 0 scales the token's
        policy-gradient term by w_t."""
        if micro.is_weights is not None:
            advantages = advantages * micro.is_weights
        cfg = self.loss_cfg
        log_ratio, clip_low, clip_high = micro.logprobs - micro.old_logprobs, cfg.clip_low, cfg.clip_high
        if cfg.ratio == "sequence":
            log_ratio = sequence_log_ratio(micro.logprobs, micro.old_logprobs, micro.response_mask)
            clip_low, clip_high = cfg.sequence_clip_low, cfg.sequence_clip_high
        if cfg.surrogate == "cispo":
            return cispo_surrogate(micro.logprobs, log_ratio, advantages, cfg.cispo_clip_low, cfg.cispo_clip_high)
        return clipped_surrogate(log_ratio, advantages, clip_low, clip_high, cfg.dual_clip)


OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str, config: type):
    """Class decorator: `method.name=<name>` builds this objective; `config` is its typed schema, stored in
    Hydra's ConfigStore as `schema/method/<name>` for its yaml's defaults line."""

    def register(cls: type[Objective]) -> type[Objective]:
        if OBJECTIVES.get(name, cls) is not cls:
            raise ValueError(f"two objectives are registered as {name!r}: {OBJECTIVES[name]} and {cls}")
        cls.name, cls.config = name, config
        OBJECTIVES[name] = cls
        ConfigStore.instance().store(group="schema/method", name=name, node=config)
        return cls

    return register


def teacher_config(cfg) -> TeacherConfig:
    return TeacherConfig(**cfg.teacher)


def teacher_field(mode: str = "live", reference: str = "answer"):
    """A method's `teacher` field with these defaults (RLSD: live, answer; OPSD and the hybrid: fixed, solution)."""
    return field(default_factory=lambda: TeacherConfig(mode=mode, reference=reference))
