"""Math answers: extract the final answer, then decide equivalence with the `math-verify` library.

Extraction order (the first that matches, last occurrence wins): `\\boxed{...}` / `\\fbox{...}` (nested
braces respected), `<answer>...</answer>`, "the answer is ..." / "Answer: ...", the embedded template's answer
marker `A:` (so the embedded model can be scored on math data), and, only with `fallback_last_number=true`,
the last number in the text. The sub-score `format` says whether an explicit form (the first four) was found.

Equivalence is math-verify's (symbolic, LaTeX or plain expressions, 6-digit float rounding); with
`rel_tol > 0`, two numeric answers within that relative tolerance also count as equal.
"""

from __future__ import annotations

import math
import re
import threading

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rlsd_lab.prompts import ANSWER_MARKER
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verdict, Verifier

BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
ANSWER_PHRASE = re.compile(r"(?:the (?:final )?answer is|answer\s*:)\s*(.+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
EXTRACTION = [LatexExtractionConfig(), ExprExtractionConfig()]
MAX_ANSWER_CHARS = 500  # longer "answers" are not answers; they also keep sympy's parser out of trouble


def last_boxed(text: str) -> str | None:
    """Content of the last closed `\\boxed{...}` (nested braces respected), or None; one pass over the text."""
    box_openings = {m.end() - 1 for m in BOXED.finditer(text)}  # index of each box's own "{"
    open_braces, last = [], None
    for i, char in enumerate(text):
        if char == "{":
            open_braces.append(i)
        elif char == "}" and open_braces:
            start = open_braces.pop()
            if start in box_openings and (last is None or start > last[0]):
                last = (start, i)
    return text[last[0] + 1:last[1]] if last else None


def extract_answer(text: str, fallback_last_number: bool = False) -> tuple[str | None, str]:
    """(answer, form): the final answer and which form it was found in ('' when none)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    tags = ANSWER_TAG.findall(text)
    if tags:
        return tags[-1], "answer tag"
    phrases = ANSWER_PHRASE.findall(text)
    if phrases:
        return phrases[-1].split("\n", 1)[0].strip().rstrip("."), "answer phrase"
    if ANSWER_MARKER in text:
        return text.rsplit(ANSWER_MARKER, 1)[1].split("\n", 1)[0], "answer marker"
    numbers = NUMBER.findall(text)
    if fallback_last_number and numbers:
        return numbers[-1], "last number"
    return None, ""


def _as_float(parsed: list) -> float | None:
    try:
        return float(parsed[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class MathVerifier(Verifier):
    name = "math"

    def __init__(self, fallback_last_number: bool = False, rel_tol: float = 0.0, timeout_s: int = 5):
        self.fallback_last_number, self.rel_tol, self.timeout_s = fallback_last_number, rel_tol, timeout_s
        self._gold_cache: dict[str, list] = {}

    def _parse(self, text: str) -> list:
        # math-verify's own timeout uses SIGALRM, which only works in the main thread.
        timeout = self.timeout_s if threading.current_thread() is threading.main_thread() else None
        return parse(f"${text}$", extraction_config=EXTRACTION, parsing_timeout=timeout)

    def score(self, response: str, problem: Problem) -> Verdict:
        extracted, form = extract_answer(response, self.fallback_last_number)
        if extracted is None:
            return Verdict.fail("no answer", format=0.0)
        extracted = extracted.strip()
        explicit = float(form != "last number")
        if not extracted:
            return Verdict.fail("empty answer", extracted=extracted, format=explicit)
        if len(extracted) > MAX_ANSWER_CHARS:
            return Verdict.fail("answer too long", f"{len(extracted)} characters", format=explicit)
        if problem.answer not in self._gold_cache:
            self._gold_cache[problem.answer] = self._parse(problem.answer)
        gold, predicted = self._gold_cache[problem.answer], self._parse(extracted)
        if not gold:
            return Verdict.fail("bad problem", f"gold answer {problem.answer!r} does not parse", extracted)
        if not predicted:  # math-verify returns nothing when its parsing timeout fires
            return Verdict.fail("unparsable answer", extracted=extracted, format=explicit)
        timeout = self.timeout_s if threading.current_thread() is threading.main_thread() else None
        equal = verify(gold, predicted, timeout_seconds=timeout)
        if not equal and self.rel_tol > 0:
            a, b = _as_float(gold), _as_float(predicted)
            equal = a is not None and b is not None and math.isclose(a, b, rel_tol=self.rel_tol)
        if not equal:
            return Verdict.fail("wrong answer", extracted=extracted, format=explicit, correct=0.0)
        return Verdict(1.0, "correct", {"format": explicit, "correct": 1.0}, extracted=extracted)
