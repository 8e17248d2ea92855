"""Diagnostics shared by all methods: leakage rate, the teacher's Delta by outcome, answer spans.

Leakage: the share of student responses (no reference in context) that show the reference's influence. For the
embedded task: the citation marker the base policy learned from reference-conditioned data (`@ref`), or the
answer stated before any step; for real data, a configurable phrase list (`diagnostics.leakage_phrases`).
"""

from __future__ import annotations

import torch


def shows_leakage(text: str, phrases: list[str], answer_marker: str, answer_first: bool) -> bool:
    if any(phrase in text for phrase in phrases):
        return True
    return answer_first and text.lstrip().startswith(answer_marker)


def leakage_rate(texts: list[str], phrases: list[str], answer_marker: str, answer_first: bool) -> float:
    return sum(shows_leakage(t, phrases, answer_marker, answer_first) for t in texts) / max(len(texts), 1)


def delta_by_outcome(delta_B_T: torch.Tensor, rewards_B: torch.Tensor, response_mask_B_T: torch.Tensor
                     ) -> dict[str, float]:
    """Mean Delta (teacher minus student log-prob) over the tokens of correct and of wrong responses: a teacher
    that knows more than the student raises the tokens of correct responses and lowers those of wrong ones."""
    delta, correct = delta_B_T, (rewards_B >= 1.0)[:, None]
    mask = response_mask_B_T.bool()
    metrics = {}
    for name, rows in (("correct", correct), ("wrong", ~correct)):
        tokens = mask & rows
        metrics[f"teacher/delta_{name}"] = float(delta[tokens].mean()) if tokens.any() else float("nan")
    return metrics


def reasoning_mask(response_ids: torch.Tensor, response_mask: torch.Tensor, marker_ids: list[int]) -> torch.Tensor:
    """[B, T] 1 on tokens before the last occurrence of the answer marker (all tokens when it is absent)."""
    mask = response_mask.clone()
    width = len(marker_ids)
    marker = torch.tensor(marker_ids, device=response_ids.device)
    for row in range(response_ids.shape[0]):
        windows = response_ids[row].unfold(0, width, 1) if response_ids.shape[1] >= width else None
        if windows is None:
            continue
        hits = (windows == marker).all(dim=1).nonzero()
        if len(hits):
            mask[row, int(hits[-1]):] = 0
    return mask
