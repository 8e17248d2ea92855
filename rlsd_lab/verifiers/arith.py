"""Exact-match verifier for the embedded arithmetic task."""

from __future__ import annotations

import re

from rlsd_lab.prompts import ANSWER_MARKER
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verifier

INTEGER = re.compile(r"-?[0-9]+")


class ArithVerifier(Verifier):
    """Reward 1 when the text after the last answer marker, up to the end of its line, equals the answer."""

    name = "arith"

    def score(self, response: str, problem: Problem) -> tuple[float, dict]:
        if ANSWER_MARKER not in response:
            return 0.0, {"reason": "no answer marker", "extracted": None}
        extracted = response.rsplit(ANSWER_MARKER, 1)[1].split("\n", 1)[0].strip()
        if not extracted:
            return 0.0, {"reason": "empty answer", "extracted": extracted}
        if not INTEGER.fullmatch(extracted):
            return 0.0, {"reason": "answer is not an integer", "extracted": extracted}
        if extracted != problem.answer:
            return 0.0, {"reason": "wrong answer", "extracted": extracted}
        return 1.0, {"reason": "correct", "extracted": extracted}
