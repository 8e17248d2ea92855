"""RLSD: the verifier sets the direction of each update, the privileged teacher only its per-token magnitude.

    w_t = exp(sign(A) * Delta_t),   A_hat_t = A * [(1 - lambda) + lambda * clip(w_t, 1 - eps_w, 1 + eps_w)]

The clip is on w, so sign(A_hat_t) = sign(A) always; A = 0 (a group all right or all wrong) gives no signal, so
the teacher pass skips those groups. lambda decays linearly from lambda_0 to 0 over `decay_steps` (paper: 0.5
over 50 steps), or stays constant. `negative_only` reweights only sequences with A < 0; `reasoning_only` only
tokens before the answer span.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base import Needs, register_objective, teacher_config, teacher_field
from methods.grpo import GRPO, GRPOConfig
from rlsd_lab.choices import unknown_choice
from rlsd_lab.config import TeacherConfig, bounded, choice

SCHEDULES = ("linear", "constant")


@dataclass
class RLSDConfig(GRPOConfig):
    eps_w: float = bounded(0.2, 0.0, 1.0, low_open=True, help="clip of w to [1 - eps_w, 1 + eps_w]")
    lambda_0: float = bounded(0.5, 0.0, 1.0, help="weight of the teacher's magnitude at step 0")
    decay_steps: int = bounded(50, 1, help="linear schedule: steps from lambda_0 to 0 (paper 50)")
    schedule: str = choice("linear", SCHEDULES)
    negative_only: bool = False
    reasoning_only: bool = False
    teacher: TeacherConfig = teacher_field()


def rlsd_lambda(step: int, lambda_0: float, decay_steps: int, schedule: str) -> float:
    if schedule == "constant":
        return lambda_0
    if schedule == "linear":
        return lambda_0 * max(0.0, 1.0 - step / decay_steps)
    raise unknown_choice("lambda schedule", schedule, SCHEDULES)


def rlsd_advantages(advantages: torch.Tensor, delta: torch.Tensor, lam: float, eps_w: float) -> torch.Tensor:
    """[B, T] A_hat from sequence advantages [B] and Delta [B, T]."""
    sign = torch.sign(advantages)[:, None]
    w = torch.exp(sign * delta).clamp(1.0 - eps_w, 1.0 + eps_w)
    return advantages[:, None] * ((1.0 - lam) + lam * w)


@register_objective("rlsd", RLSDConfig)
class RLSD(GRPO):
    def __init__(self, cfg, loss_cfg):
        super().__init__(cfg, loss_cfg)
        self.needs = Needs(teacher=teacher_config(cfg), scale_by_std=cfg.scale_by_std,
                           teacher_groups="negative" if cfg.negative_only else "informative",
                           reasoning_mask=cfg.reasoning_only)

    def token_advantages(self, experience):
        cfg = self.cfg
        base, grpo_metrics = super().token_advantages(experience)
        sequence_advantages, delta = experience.sequence_advantages_B, experience.delta_B_T
        mask = experience.response_mask_B_T
        lam = rlsd_lambda(experience.step, cfg.lambda_0, cfg.decay_steps, cfg.schedule)
        reweighted = rlsd_advantages(sequence_advantages, delta, lam, cfg.eps_w)
        keep = mask.bool()
        if cfg.negative_only:
            keep = keep & (sequence_advantages < 0)[:, None]
        if cfg.reasoning_only and experience.reasoning_mask_B_T is not None:
            keep = keep & experience.reasoning_mask_B_T.bool()
        advantages = torch.where(keep, reweighted, base) * mask
        return advantages, grpo_metrics | self._metrics(sequence_advantages, delta, mask, advantages, base, lam)

    def _metrics(self, sequence_advantages, delta, response_mask, advantages, base, lam) -> dict[str, float]:
        mask = response_mask.bool()
        informative = mask & (sequence_advantages != 0)[:, None]
        w = torch.exp(torch.sign(sequence_advantages)[:, None] * delta)
        count = max(int(informative.sum()), 1)
        # With negative_only the teacher pass skips A > 0 groups, so their Delta is not measured.
        positive = mask & (sequence_advantages > 0)[:, None] & (not self.cfg.negative_only)
        negative = mask & (sequence_advantages < 0)[:, None]
        return {
            "rlsd_lambda": lam,
            "rlsd_w_clipfrac_low": float((w[informative] < 1 - self.cfg.eps_w).sum()) / count,
            "rlsd_w_clipfrac_high": float((w[informative] > 1 + self.cfg.eps_w).sum()) / count,
            "rlsd_delta_mean_pos_adv": float(delta[positive].mean()) if positive.any() else float("nan"),
            "rlsd_delta_mean_neg_adv": float(delta[negative].mean()) if negative.any() else float("nan"),
            "rlsd_adv_abs_ratio": float(advantages[mask].abs().mean() / base[mask].abs().mean().clamp(min=1e-12)),
        }
