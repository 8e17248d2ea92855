"""OPSD: on-policy self-distillation. No reward; the student is pulled toward its own reference-conditioned
distribution (the teacher: same weights, privileged prompt).

`form: divergence` minimises a per-token divergence over the vocabulary on the student's own tokens
(`support: full` = generalised JSD_beta; `teacher_top1` / `student_top1` = the RLSD paper's leakage-bandwidth
variants), optionally clipped per token. `form: sampled_token` uses A_hat_t = Delta_t in the clipped
surrogate (score function: -Delta_t log P_S(y_t)); never d(log P_T - log P_S) directly.
"""

from __future__ import annotations

from functools import partial

import torch

from methods.base import MicroBatch, Objective, ScoredRollout
from methods.divergences import SUPPORTS, token_divergence
from rlsd_lab.choices import check_choice

FORMS = ("divergence", "sampled_token")


class OPSD(Objective):
    name = "opsd"
    uses_teacher = True

    def __init__(self, cfg, loss_cfg):
        super().__init__(cfg, loss_cfg)
        check_choice("OPSD form", cfg.form, FORMS)
        check_choice("OPSD support", cfg.support, SUPPORTS)
        if cfg.form == "divergence":
            self.token_divergence = partial(token_divergence, support=cfg.support, beta=cfg.beta,
                                            clip=cfg.divergence_clip)

    def token_advantages(self, rollout: ScoredRollout, step: int):
        if self.cfg.form == "sampled_token":
            return rollout.delta, {}
        return torch.zeros_like(rollout.response_mask), {}

    def token_credit(self, rollout: ScoredRollout, step: int, divergence_credit):
        return divergence_credit if self.cfg.form == "divergence" else rollout.delta

    def policy_loss(self, micro: MicroBatch):
        if self.cfg.form == "sampled_token":
            return super().policy_loss(micro)
        return micro.divergence, {"opsd_divergence": micro.divergence.detach()}
