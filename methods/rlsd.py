"""RLSD: the verifier sets the direction of each update, the privileged teacher only its per-token magnitude.

    w_t = exp(sign(A) * Delta_t),   A_hat_t = A * [(1 - lambda) + lambda * clip(w_t, 1 - eps_w, 1 + eps_w)]

The clip is on w, so sign(A_hat_t) = sign(A) always; A = 0 (a group all right or all wrong) gives no signal.
lambda decays linearly from lambda_0 to 0 over `decay_steps` (paper: 0.5 over 50 steps), or stays constant.
`negative_only` reweights only sequences with A < 0; `reasoning_only` only tokens before the answer span.
"""

from __future__ import annotations

import torch

from methods.base import ScoredRollout
from methods.grpo import GRPO
from rlsd_lab.choices import unknown_choice

SCHEDULES = ("linear", "constant")


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


class RLSD(GRPO):
    name = "rlsd"
    uses_teacher = True

    def teacher_groups(self, rollout: ScoredRollout) -> torch.Tensor:
        """Only groups with A != 0 (A < 0 with `negative_only`) use Delta: the teacher pass skips the others."""
        advantages = self.sequence_advantages(rollout).view(-1, rollout.group_size)
        used = advantages < 0 if self.cfg.negative_only else advantages != 0
        return used.any(dim=1)

    def token_advantages(self, rollout: ScoredRollout, step: int):
        cfg = self.cfg
        base, grpo_metrics = super().token_advantages(rollout, step)
        sequence_advantages = self.sequence_advantages(rollout)
        delta = rollout.delta
        lam = rlsd_lambda(step, cfg.lambda_0, cfg.decay_steps, cfg.schedule)
        reweighted = rlsd_advantages(sequence_advantages, delta, lam, cfg.eps_w)
        keep = rollout.response_mask.bool()
        if cfg.negative_only:
            keep = keep & (sequence_advantages < 0)[:, None]
        if cfg.reasoning_only and rollout.reasoning_mask is not None:
            keep = keep & rollout.reasoning_mask.bool()
        advantages = torch.where(keep, reweighted, base) * rollout.response_mask
        return advantages, grpo_metrics | self._metrics(sequence_advantages, delta, rollout, advantages, base, lam)

    def _metrics(self, sequence_advantages, delta, rollout, advantages, base, lam) -> dict[str, float]:
        mask = rollout.response_mask.bool()
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
