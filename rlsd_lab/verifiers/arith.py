"""Exact-match verifier for the embedded arithmetic task."""

from __future__ import annotations

import re

from rlsd_lab.prompts import ANSWER_MARKER
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verdict, Verifier

INTEGER = re.compile(r"-?[0-9]+")


class ArithVerifier(Verifier):
    """Reward 1 when the text after the last answer marker, up to the end of its line, equals the answer."""

    name = "arith"

    def score(self, response: str, problem: Problem) -> Verdict:
        if ANSWER_MARKER not in response:
            return Verdict.fail("no answer marker")
        extracted = response.rsplit(ANSWER_MARKER, 1)[1].split("\n", 1)[0].strip()
        if not extracted:
            return Verdict.fail("empty answer", extracted=extracted)
        if not INTEGER.fullmatch(extracted):
            return Verdict.fail("answer is not an integer", extracted=extracted)
        if extracted != problem.answer:
            return Verdict.fail("wrong answer", extracted=extracted)
        return Verdict(1.0, "correct", extracted=extracted)
