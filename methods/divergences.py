"""Per-token divergences between the teacher's and the student's next-token distributions (OPSD).

Inputs are full-vocabulary log-probs [..., V]; the student's carry gradients, the teacher's are fixed.
Each function returns a per-token loss [...].
"""

from __future__ import annotations

import math

import torch

from rlsd_lab.choices import unknown_choice

SUPPORTS = ("full", "teacher_top1", "student_top1", "topk")


def kl(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension."""
    return (p_logprobs.exp() * (p_logprobs - q_logprobs)).sum(dim=-1)


def generalized_jsd(student: torch.Tensor, teacher: torch.Tensor, beta: float) -> torch.Tensor:
    """JSD_beta = beta KL(T || M) + (1 - beta) KL(S || M), M = beta T + (1 - beta) S.

    Small beta behaves like forward KL(T || S), beta near 1 like reverse KL(S || T); the endpoints are those
    KLs exactly (the mixture form would vanish there).
    """
    if beta == 0.0:
        return kl(teacher, student)
    if beta == 1.0:
        return kl(student, teacher)
    mixture = torch.logsumexp(torch.stack([student + math.log(1 - beta), teacher + math.log(beta)]), dim=0)
    return beta * kl(teacher, mixture) + (1 - beta) * kl(student, mixture)


def teacher_top1_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """-log P_S(argmax_v P_T): the student imitates only the teacher's most likely token."""
    return -student.gather(-1, teacher.argmax(dim=-1, keepdim=True)).squeeze(-1)


def student_top1_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """-(P_T / P_S)(v) log P_S(v) at v = argmax_v P_S: forward KL estimated on the student's own top-1 token,
    importance-weighted (the weight is a constant)."""
    top = student.argmax(dim=-1, keepdim=True)
    student_top, teacher_top = student.gather(-1, top).squeeze(-1), teacher.gather(-1, top).squeeze(-1)
    weight = (teacher_top - student_top).detach().exp()
    return -weight * student_top


def top_k_with_tail(student: torch.Tensor, teacher: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both distributions on the student's top-k tokens plus one tail bucket holding the rest of the mass
    (SDPO's cheap approximation of the full vocabulary): [..., k + 1] log-probs each."""
    top = student.topk(min(k, student.shape[-1]), dim=-1).indices
    pieces = []
    for logprobs in (student, teacher):
        head = logprobs.gather(-1, top)
        tail = torch.log1p(-head.exp().sum(dim=-1, keepdim=True).clamp(max=1 - 1e-6))
        pieces.append(torch.cat([head, tail], dim=-1))
    return pieces[0], pieces[1]


def token_divergence(student: torch.Tensor, teacher: torch.Tensor, support: str, beta: float,
                     clip: float | None, top_k: int = 20) -> torch.Tensor:
    """The per-token distillation loss for a `support`, optionally clipped per token: `full` JSD_beta, the
    leakage-bandwidth variants (OPSD), or JSD_beta on the student's `top_k` tokens plus a tail bucket (SDPO)."""
    if support == "full":
        loss = generalized_jsd(student, teacher, beta)
    elif support == "topk":
        loss = generalized_jsd(*top_k_with_tail(student, teacher, top_k), beta)
    elif support == "teacher_top1":
        loss = teacher_top1_cross_entropy(student, teacher)
    elif support == "student_top1":
        loss = student_top1_cross_entropy(student, teacher)
    else:
        raise unknown_choice("OPSD support", support, SUPPORTS)
    # Above the clip the loss is constant, so those tokens contribute no gradient.
    return loss.clamp(max=clip) if clip is not None else loss
