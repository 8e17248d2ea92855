"""OPSD: on-policy self-distillation. No reward; the student is pulled toward its own reference-conditioned
distribution (the teacher: same weights, privileged prompt).

`form: divergence` minimises a per-token divergence over the vocabulary on the student's own tokens
(`support: full` = generalised JSD_beta; `teacher_top1` / `student_top1` = the RLSD paper's leakage-bandwidth
variants), optionally clipped per token. `form: sampled_token` uses A_hat_t = Delta_t in the clipped
surrogate (score function: -Delta_t log P_S(y_t)); never d(log P_T - log P_S) directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch

from methods.base import (
    LossOutput,
    MethodConfig,
    MicroBatch,
    Needs,
    Objective,
    register_objective,
    teacher_config,
    teacher_field,
)
from methods.divergences import SUPPORTS, token_divergence
from rlsd_lab.config import TeacherConfig, bounded, choice

FORMS = ("divergence", "sampled_token")


@dataclass
class DistillationConfig:
    """The distillation term (also the OPSD part of the hybrid)."""

    form: str = choice("divergence", FORMS)
    support: str = choice("full", SUPPORTS, "full: JSD_beta; teacher_top1 / student_top1: leakage-bandwidth variants; "
                                            "topk: JSD_beta on the student's top_k tokens plus a tail bucket")
    top_k: int = bounded(20, 1, help="support=topk: tokens kept before the tail bucket")
    beta: float = bounded(0.5, 0.0, 1.0, help="JSD_beta: 0 = forward KL(T||S), 1 = reverse KL(S||T)")
    divergence_clip: Optional[float] = bounded(None, 0.0, low_open=True, help="per-token cap; null: off")


@dataclass
class OPSDConfig(MethodConfig, DistillationConfig):
    teacher: TeacherConfig = teacher_field("fixed", "solution")


@register_objective("opsd", OPSDConfig)
class OPSD(Objective):
    def __init__(self, cfg, loss_cfg):
        super().__init__(cfg, loss_cfg)
        divergence = None
        if cfg.form == "divergence":
            divergence = partial(token_divergence, support=cfg.support, beta=cfg.beta, clip=cfg.divergence_clip,
                                 top_k=cfg.top_k)
        self.needs = Needs(teacher=teacher_config(cfg), divergence=divergence)

    def token_advantages(self, experience):
        if self.cfg.form == "sampled_token":
            return experience.delta_B_T, {}
        return torch.zeros_like(experience.response_mask_B_T), {}

    def per_token_loss(self, micro: MicroBatch) -> LossOutput:
        if self.cfg.form == "sampled_token":
            return super().per_token_loss(micro)
        return LossOutput(micro.divergence, {"opsd_divergence": micro.divergence.detach()})
