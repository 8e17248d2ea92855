"""Per-token credit: what an objective does to each token of a response, for export and side-by-side plots.

Credit is the weight the update puts on grad log P_S(y_t): minus the derivative of the objective's own per-token
loss with respect to the sampled token's log-prob, at pi_old (ratio 1). It is read off the objective's two calls
(token_advantages, then per_token_loss), so every objective has one, a new one included: for a clipped-surrogate
objective it is its per-token advantage (times the importance weight), for the divergence form of OPSD minus the
divergence's derivative at the sampled token, for a combination the mix of its parts'.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from methods import MicroBatch, Objective
from rlsd_lab.experience import Experience, rows_of
from rlsd_lab.logprobs import HiddenStates, TokenScorer


@torch.enable_grad()
def token_credit(objective: Objective, experience: Experience, *, student: HiddenStates, scorer: TokenScorer,
                 micro_batch_size: int) -> torch.Tensor:
    """[B, T] credit (0 on padding). `student`: the policy's hidden states of the responses at pi_old, for the
    full-vocabulary divergence of objectives that have one; `micro_batch_size` rows are scored at a time."""
    response_ids = experience.rollout.response_ids
    credits = []
    for rows in torch.arange(response_ids.shape[0]).split(micro_batch_size):
        logprobs = experience.student_logprobs_B_T[rows].detach().clone().requires_grad_(True)
        divergence = None
        if objective.needs.divergence is not None:
            divergence = scorer.divergence_at_sampled(objective.needs.divergence, student.rows(rows),
                                                      experience.teacher_states.rows(rows), response_ids[rows],
                                                      logprobs)
        micro = MicroBatch(logprobs=logprobs, old_logprobs=logprobs.detach(),
                           advantages=rows_of(experience.advantages, rows),
                           response_mask=experience.response_mask_B_T[rows],
                           is_weights=rows_of(experience.is_weights_B_T, rows),
                           delta=rows_of(experience.delta_B_T, rows), divergence=divergence)
        (grad,) = torch.autograd.grad(objective.per_token_loss(micro).loss.sum(), logprobs, allow_unused=True)
        credits.append(torch.zeros_like(logprobs) if grad is None else -grad)
    return torch.cat(credits) * experience.loss_mask_B_T


def alternate_outcomes(rewards: torch.Tensor, advantages: torch.Tensor, count: int) -> list[int]:
    """`count` row indices, correct and wrong responses in turn, those with A != 0 first (the others get no
    credit), so that an export shows what a method does to both."""
    informative = torch.argsort((advantages == 0).int(), stable=True).tolist()
    correct = [i for i in informative if rewards[i] >= 1.0]
    wrong = [i for i in informative if rewards[i] < 1.0]
    turns = [i for pair in zip(correct, wrong) for i in pair]
    taken = set(turns)
    rest = [i for i in informative if i not in taken]
    return (turns + rest)[:count]


def write_credit_records(path: Path, *, step: int, method: str, prompts: list[str], tokens: list[list[str]],
                         credits: torch.Tensor, rewards: torch.Tensor, advantages: torch.Tensor,
                         first_errors: list[int | None]) -> None:
    """Appends one JSON line per response: step, method, prompt, response tokens, credit, reward, A, and the token
    index of its first error (null when correct or unknown)."""
    with path.open("a") as out:
        for row, (prompt, response_tokens) in enumerate(zip(prompts, tokens)):
            out.write(json.dumps({
                "step": step, "method": method, "prompt": prompt, "tokens": response_tokens,
                "credit": [round(float(c), 6) for c in credits[row, :len(response_tokens)]],
                "reward": float(rewards[row]), "advantage": float(advantages[row]),
                "first_error": first_errors[row],
            }) + "\n")
