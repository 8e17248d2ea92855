"""The unit of data every task produces and every verifier scores."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One question with its checkable answer and, optionally, a worked solution.

    `solution` is the privileged information that the teacher pass may see (in `answer` mode only `answer`).
    """

    uid: str
    question: str
    answer: str
    solution: str = ""
