"""GRPO+OPSD, the naive hybrid: a combination of the GRPO and OPSD objectives, each computing its own part.

`mix: loss`: (1 - beta_h) L_GRPO + beta_h L_OPSD, OPSD in its configured form. `mix: advantage`:
A_hat_t = A + beta_h Delta_t in the GRPO surrogate (OPSD's sampled-token advantage; its `form` is not read).
beta_h has no published value and no default: it must be set (e.g. `method.beta_h=0.1`). Each part's gradient
norm is logged on diagnostic steps (`grad_norm/grpo`, `grad_norm/opsd`), from the part's own advantages.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from omegaconf import MISSING, OmegaConf

from methods.base import LossOutput, MicroBatch, Needs, Objective, register_objective, teacher_config, teacher_field
from methods.grpo import GRPO, GRPOConfig
from methods.opsd import OPSD, DistillationConfig
from rlsd_lab.config import TeacherConfig, bounded, choice

MIXES = ("loss", "advantage")


@dataclass
class HybridConfig(GRPOConfig):
    beta_h: float = bounded(MISSING, 0.0, 1.0, help="no published value; sweep it, e.g. method.beta_h=0.1")
    mix: str = choice("loss", MIXES)
    opsd: DistillationConfig = field(default_factory=DistillationConfig)
    teacher: TeacherConfig = teacher_field("fixed", "solution")


@register_objective("hybrid", HybridConfig)
class Hybrid(Objective):
    def __init__(self, cfg, loss_cfg):
        super().__init__(cfg, loss_cfg)
        opsd_cfg = OmegaConf.create({**OmegaConf.to_container(cfg.opsd), "teacher": OmegaConf.to_container(cfg.teacher),
                                     "form": cfg.opsd.form if cfg.mix == "loss" else "sampled_token"})
        self.parts = {"grpo": GRPO(cfg, loss_cfg), "opsd": OPSD(opsd_cfg, loss_cfg)}
        self.beta = cfg.beta_h
        self.needs = Needs(teacher=teacher_config(cfg), divergence=self.parts["opsd"].needs.divergence,
                           scale_by_std=cfg.scale_by_std)

    def token_advantages(self, experience):
        parts = {name: part.token_advantages(experience) for name, part in self.parts.items()}
        return {name: advantages for name, (advantages, _) in parts.items()}, parts["grpo"][1]

    def per_token_loss(self, micro: MicroBatch) -> LossOutput:
        beta, advantages = self.beta, micro.advantages
        if self.cfg.mix == "advantage":
            surrogate = self.parts["grpo"].per_token_loss(replace(
                micro, advantages=advantages["grpo"] + beta * advantages["opsd"]))
            terms = {"grpo": self.parts["grpo"].surrogate(micro, advantages["grpo"])["loss"],
                     "opsd": self.parts["grpo"].surrogate(micro, beta * advantages["opsd"])["loss"]}
            return LossOutput(surrogate.loss, surrogate.metrics, terms)
        grpo = self.parts["grpo"].per_token_loss(replace(micro, advantages=advantages["grpo"]))
        opsd = self.parts["opsd"].per_token_loss(replace(micro, advantages=advantages["opsd"]))
        terms = {"grpo": (1 - beta) * grpo.loss, "opsd": beta * opsd.loss}
        return LossOutput(terms["grpo"] + terms["opsd"], grpo.metrics | {"opsd_term": opsd.loss.detach()}, terms)
