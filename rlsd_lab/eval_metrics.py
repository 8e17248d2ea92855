"""The accuracy metrics papers report from n samples per problem, and their confidence intervals.

- avg@n: mean correctness over the n samples (the OPSD paper's avg@16); with temperature 0 and n = 1 it is greedy
  accuracy.
- pass@k (k <= n): the unbiased estimator of Chen et al. 2021, 1 - C(n - c, k) / C(n, k) for c correct of n,
  computed as a product so that large n does not overflow.
- maj@k: a majority vote over the extracted answers of the first k samples. The problem counts as solved when the
  voted answer is a correct one. Samples with no extractable answer do not vote; if none votes, the problem is
  unsolved. **Ties** go to the tied answer seen first in sample order: deterministic, and it favours no answer by
  its content.
- A 95% confidence interval by bootstrap over problems (percentile method, `samples` resamples, seeded): the
  uncertainty of a benchmark score is over which problems it holds.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from rlsd_lab.prompts import ANSWER_MARKER


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The probability that at least one of k samples drawn without replacement from the n is correct."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={correct} k={k}")
    if n - correct < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - correct + 1, n + 1)))


def extracted_answer(text: str) -> str | None:
    """The answer a response states: the text after its last answer marker, else its last non-empty line; None
    for an empty response."""
    if ANSWER_MARKER in text:
        return text.rsplit(ANSWER_MARKER, 1)[1].strip() or None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def majority_vote(answers: list[str | None], correct: list[bool]) -> bool:
    """Whether the majority answer among `answers` is a correct one (ties: the answer seen first)."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return any(ok for answer, ok in zip(answers, correct) if answer == winner)


def problem_scores(correct: list[bool], answers: list[str | None], ks: list[int]) -> dict[str, float]:
    """avg@n, pass@k and maj@k of one problem's n samples, in sample order."""
    n, hits = len(correct), sum(correct)
    scores = {f"avg@{n}": hits / n}
    for k in ks:
        scores[f"pass@{k}"] = pass_at_k(n, hits, k)
        scores[f"maj@{k}"] = float(majority_vote(answers[:k], correct[:k]))
    return scores


def bootstrap_ci(values: list[float], samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of the mean of `values` (one per problem), resampling problems."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)
