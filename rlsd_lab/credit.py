"""Per-token credit: what each objective does to each token of a response, for export and side-by-side plots.

Credit is the effective per-token advantage (the weight on grad log P_S(y_t) in the update). For the
divergence form of OPSD, which has no advantage, it is minus the derivative of the token's divergence with
respect to log P_S(y_t) of the sampled token (computed here by autograd, chunk by chunk).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from methods import Objective, ScoredRollout
from rlsd_lab.evaluation import decode_responses
from rlsd_lab.logprobs import TeacherStates, response_hidden, vocab_logprobs
from rlsd_lab.prompts import PromptRenderer, reference_text
from rlsd_lab.rollout import SamplingParams, build_engine
from rlsd_lab.teacher import TeacherPass


def divergence_credit(divergence_fn, student: TeacherStates, teacher: TeacherStates, targets: torch.Tensor,
                      temperature: float, chunk_size: int) -> torch.Tensor:
    """[B, T] -dD_t / d log P_S(y_t), with D the objective's per-token divergence."""
    credits = []
    for start in range(0, targets.shape[1], chunk_size):
        window = slice(start, start + chunk_size)
        with torch.no_grad():
            t = vocab_logprobs(teacher.head, teacher.hidden[:, window], temperature)
            s = vocab_logprobs(student.head, student.hidden[:, window], temperature)
        with torch.enable_grad():
            s = s.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(divergence_fn(s, t).sum(), s)
        credits.append(-grad.gather(-1, targets[:, window, None]).squeeze(-1))
    return torch.cat(credits, dim=1)


def objective_credit(objective: Objective, scored: ScoredRollout, step: int, student: TeacherStates | None,
                     teacher: TeacherStates | None, targets: torch.Tensor, temperature: float,
                     chunk_size: int) -> torch.Tensor:
    """[B, T] credit of one objective on these responses (0 on padding)."""
    opsd_credit = None
    if objective.token_divergence is not None:
        opsd_credit = divergence_credit(objective.token_divergence, student, teacher, targets, temperature,
                                        chunk_size) * scored.response_mask
    return objective.token_credit(scored, step, opsd_credit)


def compare_credits(objectives: dict[str, Objective], scored: ScoredRollout, step: int, student: TeacherStates,
                    teacher: TeacherStates, targets: torch.Tensor, temperature: float = 1.0,
                    chunk_size: int = 256) -> dict[str, torch.Tensor]:
    """All given objectives' [B, T] credits on the same responses, for side-by-side comparison.

    `scored` must carry student and teacher log-probs; `student`/`teacher` are both contexts' hidden states.
    """
    return {name: objective_credit(objective, scored, step, student, teacher, targets, temperature, chunk_size)
            for name, objective in objectives.items()}


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


def write_credit_records(path: Path, step: int, method: str, prompts: list[str], tokens: list[list[str]],
                         credits: torch.Tensor, rewards: torch.Tensor, advantages: torch.Tensor,
                         first_errors: list[int | None] | None = None) -> None:
    """Appends one JSON line per response: step, method, prompt, response tokens, credit, reward, A, and the token
    index of its first error (null when correct or unknown)."""
    first_errors = first_errors or [None] * len(prompts)
    with path.open("a") as out:
        for row, (prompt, response_tokens) in enumerate(zip(prompts, tokens)):
            out.write(json.dumps({
                "step": step, "method": method, "prompt": prompt, "tokens": response_tokens,
                "credit": [round(float(c), 6) for c in credits[row, :len(response_tokens)]],
                "reward": float(rewards[row]), "advantage": float(advantages[row]),
                "first_error": first_errors[row],
            }) + "\n")


@torch.no_grad()
def credits_on_fresh_rollouts(model, tokenizer, objectives: dict[str, Objective], problem, verifier,
                              group_size: int = 8, reference_mode: str = "answer", max_new_tokens: int = 64,
                              seed: int = 0) -> tuple[torch.Tensor, ScoredRollout, dict[str, torch.Tensor]]:
    """Samples `group_size` responses to `problem` with `model` and returns (response_ids, scored, credits):
    every objective's credit on those same responses, with a live teacher shown `reference_mode`."""
    prompts = PromptRenderer("plain", tokenizer)
    rollout = build_engine("hf", model, tokenizer, seed).generate(
        [prompts.ids(problem)], SamplingParams(max_new_tokens, n=group_size))
    rewards = torch.tensor([v.reward for v in verifier.score_batch(decode_responses(tokenizer, rollout),
                                                                      [problem] * group_size)])
    teacher_logprobs, teacher = TeacherPass(model, "live").run(
        model, [prompts.ids(problem, reference_text(problem, reference_mode))], rollout.response_ids,
        group_size, tokenizer.pad_token_id, 1.0, 256, keep_hidden=True)
    scored = ScoredRollout(rewards, rollout.response_mask, group_size, student_logprobs=rollout.logprobs,
                           teacher_logprobs=teacher_logprobs)
    length = rollout.response_ids.shape[1]
    student = TeacherStates(response_hidden(model, rollout.input_ids, rollout.attention_mask, length),
                            model.get_output_embeddings())
    return rollout.response_ids, scored, compare_credits(objectives, scored, 0, student, teacher,
                                                         rollout.response_ids)
