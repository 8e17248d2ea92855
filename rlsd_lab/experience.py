"""The record of one RL step: everything the update, the diagnostics and the credit read, built once.

`RLModule.make_experience` fills it (rollout, verification, the reference / old / teacher log-probs, the group
advantages, the objective's token advantages, the importance weights); `RLModule.learn` and the diagnostics only
read it. Rows come `group_size` at a time per prompt: B = prompts x group_size responses of up to T tokens.

Three log-probs of the sampled tokens, three concepts: `rollout.logprobs`, the engine's while sampling;
`old_logprobs_B_T`, pi_old recomputed by the trainer (set when they can differ: another engine, or optimiser
steps after the first); `student_logprobs_B_T`, whichever of the two is pi_old, which Delta is measured from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from methods.base import Advantages
from rlsd_lab.logprobs import HiddenStates
from rlsd_lab.rollout import RolloutBatch
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verdict


@dataclass(frozen=True)
class Experience:
    step: int  # RL steps done before this batch (0: sampled from the base policy)
    group_size: int
    problems: list[Problem]  # [P] one per group
    rollout: RolloutBatch  # prompt_ids [B, P_len], response_ids [B, T], response_mask [B, T], logprobs [B, T]
    texts: list[str]  # [B] decoded responses
    verdicts: list[Verdict]  # [B]
    rewards_B: torch.Tensor  # [B] the verifier's rewards (correctness)
    sequence_advantages_B: torch.Tensor  # [B] group-normalised A of the shaped rewards, computed once per step
    reward_shaping_B: torch.Tensor | None = None  # [B] added to rewards_B before A (reward.overlong)
    old_logprobs_B_T: torch.Tensor | None = None  # [B, T]; None: pi_old is the first optimiser step's weights
    ref_logprobs_B_T: torch.Tensor | None = None  # [B, T] under the initial policy (loss.kl_coef > 0)
    delta_B_T: torch.Tensor | None = None  # [B, T] log P_T - log P_S, detached; 0 on rows the teacher skipped
    teacher_rows_B: torch.Tensor | None = None  # [B] bool, the rows the teacher pass scored
    teacher_states: HiddenStates | None = None  # [B, T, H], kept for a full-vocabulary divergence or diagnostics
    reasoning_mask_B_T: torch.Tensor | None = None  # [B, T] tokens before the answer span
    advantages: Advantages | None = None  # [B, T] (or one per part) from the objective
    is_weights_B_T: torch.Tensor | None = None  # [B, T] truncated importance weights (rollout.tis_cap)
    loss_rows_B: torch.Tensor | None = None  # [B] bool, rows in the loss (loss.mask_truncated, rollout.sequence_mask)
    advantage_metrics: dict[str, float] = field(default_factory=dict)
    sampling_metrics: dict[str, float] = field(default_factory=dict)  # dynamic sampling, reward shaping, masking

    @property
    def response_mask_B_T(self) -> torch.Tensor:
        return self.rollout.response_mask

    @property
    def shaped_rewards_B(self) -> torch.Tensor:
        """What the group advantages normalise: the verifier's rewards plus any shaping."""
        return self.rewards_B if self.reward_shaping_B is None else self.rewards_B + self.reward_shaping_B

    @property
    def loss_mask_B_T(self) -> torch.Tensor:
        """The response tokens the loss sees: `response_mask_B_T` without the rows left out."""
        mask = self.rollout.response_mask
        return mask if self.loss_rows_B is None else mask * self.loss_rows_B[:, None].to(mask.dtype)

    @property
    def student_logprobs_B_T(self) -> torch.Tensor:
        return self.rollout.logprobs if self.old_logprobs_B_T is None else self.old_logprobs_B_T

    @property
    def row_problems(self) -> list[Problem]:
        """[B] the problem of each response."""
        return [problem for problem in self.problems for _ in range(self.group_size)]


def rows_of(value, rows: torch.Tensor):
    """`value` [B, ...] (or a mapping of them, or None) restricted to `rows`."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {name: tensor[rows] for name, tensor in value.items()}
    return value[rows]


def teacher_groups(which: str, sequence_advantages_B: torch.Tensor, group_size: int) -> torch.Tensor:
    """[P] bool: the groups the teacher must score (methods/base.py: Needs.teacher_groups)."""
    grouped = sequence_advantages_B.view(-1, group_size)
    if which == "informative":
        return (grouped != 0).any(dim=1)
    if which == "negative":
        return (grouped < 0).any(dim=1)
    return torch.ones(grouped.shape[0], dtype=torch.bool, device=grouped.device)
