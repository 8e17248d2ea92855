"""The embedded default task: multi-digit addition (or subtraction) with written-out column steps.

Example (digits=3, operands=2):

    Q:347+285            <- prompt
    7+5+0=12             <- one line per column, units first: digits + carry-in = two-digit column sum
    4+8+1=13                (its tens digit is the next carry)
    3+2+1=06
    A:632                <- final answer after the answer marker

Subtraction lines read `3-8-0=5 b1`: digit minus digit minus borrow-in gives digit 5, borrow 1 to the next column.
The written solution of a problem is unique (one line per column, fixed format), so the first error of a wrong
response is exactly the first character where it leaves that solution (`first_error`).
Problems are deterministic in the seed; train and validation are split by a hash of the question, so the two
splits are disjoint for every seed and every size.
"""

from __future__ import annotations

import hashlib
import random

from rlsd_lab.prompts import ANSWER_MARKER
from rlsd_lab.tasks.problem import Problem

OPERATORS = ("+", "-")


def split_of(question: str, val_percent: int) -> str:
    """'val' for a fixed `val_percent`% of all questions (by hash), else 'train'."""
    bucket = int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) % 100
    return "val" if bucket < val_percent else "train"


def _digits_lsb_first(number: int, width: int) -> list[int]:
    return [(number // 10**i) % 10 for i in range(width)]


def addition_solution(operands: list[int]) -> str:
    width = max(len(str(x)) for x in operands)
    columns = [_digits_lsb_first(x, width) for x in operands]
    lines, carry = [], 0
    for i in range(width):
        column = [digits[i] for digits in columns]
        total = sum(column) + carry
        lines.append("+".join(map(str, column)) + f"+{carry}={total:02d}")
        carry = total // 10
    return "\n".join(lines + [f"{ANSWER_MARKER}{sum(operands)}"])


def subtraction_solution(minuend: int, subtrahend: int) -> str:
    width = len(str(minuend))
    top, bottom = _digits_lsb_first(minuend, width), _digits_lsb_first(subtrahend, width)
    lines, borrow = [], 0
    for a, b in zip(top, bottom):
        value = a - b - borrow
        next_borrow = int(value < 0)
        lines.append(f"{a}-{b}-{borrow}={value + 10 * next_borrow} b{next_borrow}")
        borrow = next_borrow
    return "\n".join(lines + [f"{ANSWER_MARKER}{minuend - subtrahend}"])


def first_error(response: str, problem: Problem) -> int | None:
    """Character index of the first wrong character of `response`: where it first differs from the problem's
    written solution. A wrong digit, a wrong carry, a skipped line, a shortcut or a wrong final answer after correct
    lines all show there; a response that stops early (a prefix of the solution) errs at `len(response)`, the
    position of its end-of-sequence token. None for a response equal to the solution (nothing is wrong)."""
    if response == problem.solution:
        return None
    return next((i for i, (got, want) in enumerate(zip(response, problem.solution)) if got != want),
                min(len(response), len(problem.solution)))


class ArithTask:
    """Generates `Problem`s; `digits`, `operands` and `operators` set the difficulty."""

    name = "arith"
    first_error = staticmethod(first_error)  # this task knows where a wrong response goes wrong

    def __init__(self, digits: int = 3, operands: int = 2, operators: tuple[str, ...] = ("+",),
                 val_percent: int = 10, verifier: str = "arith"):
        if digits < 1 or operands < 2:
            raise ValueError(f"arith needs digits >= 1 and operands >= 2, got digits={digits} operands={operands}")
        unknown = set(operators) - set(OPERATORS)
        if unknown or not operators:
            raise ValueError(f"arith operators {sorted(unknown) or '[]'} invalid; valid choices: {list(OPERATORS)}")
        if "-" in operators and operands != 2:
            raise ValueError("arith subtraction is defined for operands=2 only")
        self.digits, self.operands, self.operators = digits, operands, tuple(operators)
        self.val_percent = val_percent
        self.verifier = verifier  # the verifier of its problems (they name none themselves)

    def _random_problem(self, rng: random.Random) -> Problem:
        low, high = 10 ** (self.digits - 1), 10**self.digits - 1
        numbers = [rng.randint(low, high) for _ in range(self.operands)]
        operator = rng.choice(self.operators)
        if operator == "-":
            numbers.sort(reverse=True)
            solution = subtraction_solution(*numbers)
        else:
            solution = addition_solution(numbers)
        question = operator.join(map(str, numbers))
        answer = solution.rsplit(ANSWER_MARKER, 1)[1]
        return Problem(uid=question, question=question, answer=answer, solution=solution)

    def problems(self, split: str, count: int, seed: int) -> list[Problem]:
        """`count` distinct problems of `split` ('train' or 'val'), the same list for the same seed."""
        if split not in ("train", "val"):
            raise ValueError(f"unknown split {split!r}; valid choices: train, val")
        rng = random.Random(f"arith-{split}-{seed}")
        found: dict[str, Problem] = {}
        attempts = 0
        while len(found) < count:
            attempts += 1
            if attempts > 100 * count + 10_000:
                raise ValueError(f"arith cannot produce {count} distinct {split} problems at digits={self.digits}")
            problem = self._random_problem(rng)
            if split_of(problem.question, self.val_percent) == split:
                found.setdefault(problem.question, problem)
        return list(found.values())
