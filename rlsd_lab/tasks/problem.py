"""The unit of data every task produces and every verifier scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One question with its checkable answer and, optionally, a worked solution.

    `solution` is the privileged information that the teacher pass may see (in `answer` mode only `answer`).
    `messages` holds a chat-format prompt when the data gave one (then `question` is its last user turn);
    `verifier` overrides the task's verifier for this row; `extra` carries what a verifier needs beyond the
    answer (test cases, a database, a schema) and `data_source` is passed to veRL-style custom scorers.
    """

    uid: str
    question: str
    answer: str
    solution: str = ""
    messages: tuple[dict[str, str], ...] = ()
    verifier: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    data_source: str = ""
