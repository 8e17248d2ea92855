"""A test-only objective, to show that a new one is a file and a yaml and touches nothing else: GRPO with the
sign of the advantage as every token's advantage (unit-magnitude credit; `scale` multiplies it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base import MethodConfig, Needs, Objective, register_objective
from rlsd_lab.config import bounded


@dataclass
class SignGRPOConfig(MethodConfig):
    scale: float = bounded(1.0, 0.0, low_open=True, help="the magnitude of every token's advantage")


@register_objective("sign_grpo", SignGRPOConfig)
class SignGRPO(Objective):
    def __init__(self, cfg, loss_cfg):
        super().__init__(cfg, loss_cfg)
        self.needs = Needs(scale_by_std=False)

    def token_advantages(self, experience):
        signs = torch.sign(experience.sequence_advantages_B)
        advantages = self.cfg.scale * signs[:, None] * experience.response_mask_B_T
        return advantages, {"sign_positive": float((signs > 0).float().mean())}
