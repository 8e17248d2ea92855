"""GRPO+OPSD, the naive hybrid. `mix: loss`: (1 - beta_h) L_GRPO + beta_h L_OPSD. `mix: advantage`:
A_hat_t = A + beta_h Delta_t in the GRPO surrogate. beta_h has no published value and no default: it must be
set (e.g. `method.beta_h=0.1`). The two terms' gradient norms are logged (`grad_norm/grpo`, `grad_norm/opsd`).
"""

from __future__ import annotations

from omegaconf import OmegaConf

from methods.base import MicroBatch, ScoredRollout
from methods.grpo import GRPO
from methods.opsd import OPSD
from rlsd_lab.choices import check_choice

MIXES = ("loss", "advantage")


class Hybrid(GRPO):
    name = "hybrid"
    uses_teacher = True

    def __init__(self, cfg, loss_cfg):
        super().__init__(cfg, loss_cfg)
        if OmegaConf.is_missing(cfg, "beta_h") or cfg.beta_h is None:
            raise ValueError("method=hybrid needs method.beta_h (no published value; sweep it, e.g. "
                             "method.beta_h=0.1)")
        check_choice("hybrid mix", cfg.mix, MIXES)
        self.opsd = OPSD(cfg.opsd, loss_cfg)
        self.token_divergence = self.opsd.token_divergence if cfg.mix == "loss" else None

    def token_advantages(self, rollout: ScoredRollout, step: int):
        advantages, metrics = super().token_advantages(rollout, step)
        if self.cfg.mix == "advantage":
            advantages = advantages + self.cfg.beta_h * rollout.delta
        return advantages, metrics

    def token_credit(self, rollout: ScoredRollout, step: int, divergence_credit):
        if self.cfg.mix == "advantage":
            return self.token_advantages(rollout, step)[0]
        grpo_credit = super().token_advantages(rollout, step)[0]
        opsd_credit = self.opsd.token_credit(rollout, step, divergence_credit)
        return (1 - self.cfg.beta_h) * grpo_credit + self.cfg.beta_h * opsd_credit

    def loss_terms(self, micro: MicroBatch):
        beta = self.cfg.beta_h
        if self.cfg.mix == "advantage":
            grpo_part = micro.advantages - beta * micro.delta
            return {"grpo": self.surrogate(micro, grpo_part)["loss"],
                    "opsd": self.surrogate(micro, beta * micro.delta)["loss"]}
        return {"grpo": (1 - beta) * self.surrogate(micro, micro.advantages)["loss"],
                "opsd": beta * self._opsd_loss(micro)}

    def _opsd_loss(self, micro: MicroBatch):
        return self.opsd.policy_loss(MicroBatch(**{**vars(micro), "advantages": micro.delta}))[0]

    def policy_loss(self, micro: MicroBatch):
        loss, metrics = super().policy_loss(micro)
        if self.cfg.mix == "advantage":
            return loss, metrics
        opsd = self._opsd_loss(micro)
        beta = self.cfg.beta_h
        return (1 - beta) * loss + beta * opsd, metrics | {"opsd_term": opsd.detach()}
