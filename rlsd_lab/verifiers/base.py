"""The verifier contract: a reward in [0, 1] plus an `info` dict whose `reason` says why.

A verifier never raises on model output: malformed or hostile text is a reward of 0 with a reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from rlsd_lab.tasks.problem import Problem


class Verifier(ABC):
    name: str

    @abstractmethod
    def score(self, response: str, problem: Problem) -> tuple[float, dict]: ...
