"""The verifier contract: a `Verdict` with a reward in [0, 1], named sub-scores and a reason.

A verifier never raises on model output: malformed or hostile text is a reward of 0 with a reason. The
`reason` is a short category (it becomes the metric `verify/<reason>`); specifics go to `detail`.
Verifiers are built in worker processes from a name and keyword options, so they must be cheap to construct
and must not import torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from rlsd_lab.tasks.problem import Problem


@dataclass
class Verdict:
    reward: float
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    extracted: str | None = None

    @classmethod
    def fail(cls, reason: str, detail: str = "", extracted: str | None = None, **scores: float) -> Verdict:
        return cls(0.0, reason, dict(scores), detail, extracted)


class Verifier(ABC):
    name: str

    @abstractmethod
    def score(self, response: str, problem: Problem) -> Verdict: ...

    def score_batch(self, responses: list[str], problems: list[Problem]) -> list[Verdict]:
        """In this process, one by one; `VerifierPool.score_batch` is the isolated equivalent used in training."""
        return [self.score(response, problem) for response, problem in zip(responses, problems)]
