"""DAPO's dynamic sampling: a group whose responses all got the same verifier score has zero advantage and teaches
nothing, so the step draws more prompts until it holds `data.prompts_per_step` groups that are not.

The decision reads the verifier's raw score, never a shaped reward (an overlong penalty can split a group whose
answers are all right). At most `data.dynamic_sampling.max_draws` prompt batches are drawn; when they run out, the
filtered groups fill the batch in the order drawn, so that every step (and every data-parallel rank) has the same
number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def informative_groups(scores_B: torch.Tensor, group_size: int) -> torch.Tensor:
    """[P] bool: the groups whose raw scores are not all equal."""
    grouped = scores_B.float().view(-1, group_size)
    return grouped.max(dim=1).values != grouped.min(dim=1).values


@dataclass
class GroupPicker:
    """Collects drawn groups (any payload per group) until `wanted` informative ones are held."""

    wanted: int
    draws: int = 0
    seen: int = 0

    def __post_init__(self):
        self.kept: list = []
        self.filtered: list = []

    def add(self, groups: list, scores_B: torch.Tensor, group_size: int) -> None:
        """One draw: `groups` (one payload per prompt) and their responses' raw scores [P x G]."""
        self.draws += 1
        self.seen += len(groups)
        for group, informative in zip(groups, informative_groups(scores_B, group_size).tolist()):
            (self.kept if informative else self.filtered).append(group)

    @property
    def done(self) -> bool:
        return len(self.kept) >= self.wanted

    def picked(self) -> list:
        """`wanted` groups: the informative ones first, then filtered ones to fill the batch."""
        return (self.kept + self.filtered)[:self.wanted]

    def metrics(self) -> dict[str, float]:
        filled = max(0, self.wanted - len(self.kept))
        return {"data/dynamic_draws": float(self.draws),
                "data/dynamic_filtered_share": len(self.filtered) / max(self.seen, 1),
                "data/dynamic_filled_share": filled / self.wanted}
