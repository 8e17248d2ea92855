"""SDPO: Self-Distillation Policy Optimization (Huebotter et al., arXiv 2601.20802; TRL `experimental/sdpo`).

The teacher is the model itself, by default an EMA of the policy (rate 0.05; `live` and `fixed` are options),
re-prompted with a successful response from the same group as a demonstration, through the same single reference
block as OPSD (nothing else in the prompt changes). Its next-token distribution is distilled into the unprompted
policy on the policy's own samples: full vocabulary (`support: full`, JSD_beta), the student's top-k plus a tail
bucket (`support: topk`), or the sampled token (`form: sampled_token`, A_hat_t = Delta_t in the clipped surrogate).
The divergence form is importance-weighted by sg(min(rho_t, is_clip)) (paper: 2), for mini-batches after the first.

Our reading where the sources leave a choice (Decision):
- A row's demonstration is the first *other* successful response of its group; a successful response that is its
  group's only success gets none (TRL's "don't re-prompt on self success"), as does every row of a group with no
  success. Rows without a demonstration carry no distillation signal (their weight is 0); the share that has one
  is logged (`train/sdpo_demonstration_share`), with the share of groups without any success.
- `feedback: true` appends the verifier's reason to a failed row's block ("Feedback: wrong answer"). Off by default:
  the embedded model has only ever read solutions in that block, and the arithmetic verifier's reasons say nothing
  a demonstration does not.
- No GRPO blend (the paper's lambda A_GRPO + (1 - lambda) A_SDPO variant is not built).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.base import LossOutput, MethodConfig, MicroBatch, register_objective, teacher_field
from methods.opsd import OPSD, DistillationConfig
from rlsd_lab.config import TeacherConfig, bounded


@dataclass
class SDPOConfig(MethodConfig, DistillationConfig):
    is_clip: float = bounded(2.0, 1.0, help="cap on the importance weight of the divergence form (paper: 2)")
    feedback: bool = False
    teacher: TeacherConfig = teacher_field("ema", "none")


def demonstrations(rewards_B: torch.Tensor, group_size: int) -> list[int | None]:
    """[B] the row whose response demonstrates success to each row's teacher (another success of its group), or
    None."""
    sources: list[int | None] = []
    for start in range(0, len(rewards_B), group_size):
        successes = [start + i for i in range(group_size) if rewards_B[start + i] >= 1.0]
        for row in range(start, start + group_size):
            sources.append(next((s for s in successes if s != row), None))
    return sources


@register_objective("sdpo", SDPOConfig)
class SDPO(OPSD):
    def teacher_references(self, experience) -> list[str]:
        sources = demonstrations(experience.rewards_B, experience.group_size)
        blocks = []
        for row, source in enumerate(sources):
            if source is None:
                blocks.append("")
                continue
            block = experience.texts[source]
            verdict = experience.verdicts[row] if experience.verdicts else None
            if self.cfg.feedback and verdict is not None and verdict.reward < 1.0:
                block += f"\nFeedback: {verdict.reason}"
            blocks.append(block)
        return blocks

    def token_advantages(self, experience):
        """Sampled-token form: Delta_t on rows with a demonstration; divergence form: their 0/1 weight."""
        rows = torch.tensor([s is not None for s in demonstrations(experience.rewards_B, experience.group_size)],
                            device=experience.response_mask_B_T.device)
        weight = experience.response_mask_B_T * rows[:, None]
        grouped = experience.rewards_B.view(-1, experience.group_size)
        metrics = {"sdpo_demonstration_share": float(rows.float().mean()),
                   "sdpo_groups_without_success": float((grouped.max(dim=1).values < 1.0).float().mean())}
        if self.cfg.form == "sampled_token":
            return experience.delta_B_T * weight, metrics
        return weight, metrics

    def per_token_loss(self, micro: MicroBatch) -> LossOutput:
        if self.cfg.form == "sampled_token":
            return super().per_token_loss(micro)
        is_weight = torch.exp(micro.logprobs - micro.old_logprobs).detach().clamp(max=self.cfg.is_clip)
        loss = micro.advantages * is_weight * micro.divergence
        return LossOutput(loss, {"sdpo_divergence": (micro.advantages * micro.divergence).detach()})
