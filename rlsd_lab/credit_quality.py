"""Credit against ground truth: does an objective blame the token where a wrong response actually went wrong?

On a task that can locate the first error of a wrong response (`task.first_error`, e.g. arith), every method's
per-token credit (rlsd_lab/credit.py) is ranked from most blamed (most negative) to least, and we log

- `credit/first_error_top1`: share of wrong responses whose most-blamed token is the first error;
- `credit/first_error_rank`: mean rank of the first error (1 = most blamed);
- the same two for a random ranking (`*_random`: 1/L and (L+1)/2) and for the student's own log-prob as the
  credit (`*_student_logprob`: the least likely token blamed), so a number can be read against both;
- `credit/correct_digit_share`: on correct responses, the share of |credit| on digit tokens (the computation)
  rather than format tokens, beside `credit/correct_digit_share_uniform`, the digit tokens' share of all tokens
  (what equal credit per token gives).

Ties are shared: a token tied with k others for most blamed counts 1/k towards top-1 and takes the mean rank of
its tie, so GRPO's equal credit for every token scores exactly the random baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def decoded_tokens(tokenizer, ids: list[int]) -> list[str]:
    """Each token's own decoded text (special tokens such as eos decode to ""), to map characters to tokens."""
    return [tokenizer.decode([token], skip_special_tokens=True) for token in ids]


def char_to_token(token_texts: list[str], char_index: int) -> int:
    """Index of the token whose decoded text covers `char_index`; an empty token (eos, decoded without special
    tokens) right after the text covers the position after it; len(token_texts) past the end."""
    end = 0
    for position, text in enumerate(token_texts):
        start, end = end, end + len(text)
        if char_index < end or (not text and start == char_index):  # an empty token: eos after the text
            return position
    return len(token_texts)


def blame(credit: torch.Tensor, index: int) -> tuple[float, float]:
    """(top-1, rank) of token `index` when the tokens of `credit` [L] are ranked most negative first, ties shared."""
    value = credit[index]
    below, tied = int((credit < value).sum()), int((credit == value).sum())
    top1 = 1.0 / tied if below == 0 else 0.0
    return top1, below + (tied + 1) / 2


def is_digit_token(text: str) -> bool:
    return text.strip().isdigit()


def first_error_positions(texts: list[str], problems: list, locate: Callable, token_texts: list[list[str]],
                          lengths: list[int]) -> list[int | None]:
    """Token index of each response's first error; None for responses without one inside the response."""
    positions = []
    for text, problem, tokens, length in zip(texts, problems, token_texts, lengths):
        char_index = locate(text, problem)
        token = None if char_index is None else char_to_token(tokens, char_index)
        positions.append(token if token is not None and token < length else None)
    return positions


def credit_quality(credit: torch.Tensor, student_logprobs: torch.Tensor, rewards: torch.Tensor,
                   lengths: list[int], first_errors: list[int | None], token_texts: list[list[str]]
                   ) -> dict[str, float]:
    """The `credit/*` metrics of one batch: `credit` and `student_logprobs` [B, T]; `first_errors` from
    `first_error_positions` (None where unknown); `token_texts` each response's tokens as decoded text."""
    sums: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value

    wrong = correct = 0
    for row, (length, error) in enumerate(zip(lengths, first_errors)):
        if length == 0:
            continue
        if rewards[row] < 1.0 and error is not None:
            wrong += 1
            for suffix, ranking in (("", credit[row, :length]), ("_student_logprob", student_logprobs[row, :length])):
                top1, rank = blame(ranking.float(), error)
                add(f"first_error_top1{suffix}", top1)
                add(f"first_error_rank{suffix}", rank)
            add("first_error_top1_random", 1.0 / length)
            add("first_error_rank_random", (length + 1) / 2)
        elif rewards[row] >= 1.0:
            magnitude = credit[row, :length].abs().float()
            if float(magnitude.sum()) == 0.0:
                continue  # a group all right: no credit to share out
            digits = torch.tensor([is_digit_token(t) for t in token_texts[row][:length]], dtype=torch.bool)
            correct += 1
            add("correct_digit_share", float(magnitude[digits].sum() / magnitude.sum()))
            add("correct_digit_share_uniform", float(digits.float().mean()))
    # Every key always, NaN for an empty selection: data-parallel ranks average them (distributed.reduce_metrics).
    names = [f"first_error_{kind}{suffix}" for kind in ("top1", "rank")
             for suffix in ("", "_random", "_student_logprob")]
    names += ["correct_digit_share", "correct_digit_share_uniform"]
    metrics = {}
    for name in names:
        count = correct if name.startswith("correct") else wrong
        metrics[f"credit/{name}"] = sums[name] / count if count else float("nan")
    return metrics | {"credit/wrong_located": float(wrong), "credit/correct_credited": float(correct)}
