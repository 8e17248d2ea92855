"""Verifier for Python programs: run the response's code against the problem's tests, each in a fresh sandbox.

Tests come from `problem.extra["tests"]`: stdin/stdout pairs (`{"input": ..., "output": ...}`, compared after
dropping trailing whitespace on each line and trailing blank lines) or Python assert statements run after the
program (passed when it exits 0). Without them, `problem.answer` may hold the veRL/PRIME layout, a JSON object
with equally long "inputs" and "outputs" lists. The reward is the share of tests passed, except that a program
the sandbox had to block scores 0 whatever it printed.

Reasons: passed, partial, no code, no tests, malformed unicode, blocked, timeout, memory limit, output limit,
runtime error, wrong output.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from dataclasses import dataclass

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verdict, Verifier
from rlsd_lab.verifiers.sandbox import Limits, RunResult, run_python

# a fence, its language tag, and the block up to the closing fence or the end (generations get cut off)
FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
PYTHON_TAGS = frozenset({"python", "python3", "py"})


class NoTests(ValueError):
    """The problem's tests are missing or malformed: a data problem, scored as 'no tests'."""


@dataclass(frozen=True)
class Case:
    stdin: str = ""
    expected: str | None = None  # None: an assert test, passed when the program exits 0
    suffix: str = ""  # appended to the program: the assert statement


def extract_code(response: str) -> str:
    """The last ```python block, else the last untagged ``` block, else the whole response; dedented, stripped."""
    blocks = [(tag.lower(), body) for tag, body in FENCE.findall(response)]
    for tags in (PYTHON_TAGS, {""}):
        chosen = [body for tag, body in blocks if tag in tags]
        if chosen:
            return textwrap.dedent(chosen[-1]).strip()
    return textwrap.dedent(response).strip()


def load_tests(problem: Problem) -> list[Case]:
    """The problem's tests; NoTests says what is wrong with them."""
    if "tests" in problem.extra:
        tests = problem.extra["tests"]
        if not isinstance(tests, (list, tuple)) or not tests:
            raise NoTests("extra['tests'] is not a non-empty list")
        return [_case(test) for test in tests]
    try:
        data = json.loads(problem.answer)
    except (ValueError, TypeError, RecursionError) as error:
        raise NoTests(f"no extra['tests'], and the answer is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise NoTests("no extra['tests'], and the answer is not a JSON object")
    if "fn_name" in data:
        raise NoTests("call-based tests (fn_name) are not supported")
    inputs, outputs = data.get("inputs"), data.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs or len(inputs) != len(outputs):
        raise NoTests("the answer needs equally long, non-empty 'inputs' and 'outputs' lists")
    return [_case({"input": stdin, "output": stdout}) for stdin, stdout in zip(inputs, outputs)]


def _case(test) -> Case:
    if isinstance(test, str):
        return Case(suffix="\n\n" + test + "\n")
    if isinstance(test, dict) and isinstance(test.get("input"), str) and isinstance(test.get("output"), str):
        return Case(stdin=test["input"], expected=test["output"])
    raise NoTests(f"a test is neither an assert statement nor a pair of input/output strings: {test!r:.100}")


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n")


def judge(result: RunResult, expected: str | None) -> tuple[str, str]:
    """(reason, detail) for one run; the reason is "passed" or a failure category."""
    if result.blocked:
        return "blocked", result.detail
    if result.timed_out or result.cpu_exceeded:
        return "timeout", result.detail
    if result.memory_exceeded:
        return "memory limit", result.detail
    if result.output_exceeded:
        return "output limit", result.detail
    if result.returncode != 0:
        return "runtime error", result.detail
    if expected is not None and _normalise(result.stdout) != _normalise(expected):
        return "wrong output", f"expected {expected[:60]!r}, got {result.stdout[:60]!r}"
    return "passed", ""


class CodeVerifier(Verifier):
    """Reward = share of the problem's tests that the response's Python program passes.

    Options: the per-test sandbox `Limits` (cpu_seconds, wall_seconds, memory_mb, output_bytes, max_processes)
    and `total_wall_seconds`, the budget for all tests of one response. A test starts only while its whole wall
    limit fits in the budget, and after the first timeout none does: the rest count as failed. Keep the budget
    below the verifier pool's timeout, which would kill the worker mid-run and leave a sandbox behind.
    """

    name = "code"

    def __init__(self, *, cpu_seconds: int = 2, wall_seconds: float = 5.0, memory_mb: int = 512,
                 output_bytes: int = 1_000_000, max_processes: int = 64, total_wall_seconds: float = 20.0):
        if total_wall_seconds < wall_seconds:
            raise ValueError(f"total_wall_seconds={total_wall_seconds} leaves no room for one test of {wall_seconds} s")
        self.limits = Limits(cpu_seconds, wall_seconds, memory_mb, output_bytes, max_processes)
        self.total_wall_seconds = total_wall_seconds

    def score(self, response: str, problem: Problem) -> Verdict:
        code = extract_code(response)
        if not code:
            return Verdict.fail("no code")
        try:
            code.encode("utf-8")
        except UnicodeEncodeError as error:  # lone surrogates have no UTF-8 form to put in a source file
            return Verdict.fail("malformed unicode", str(error))
        try:
            tests = load_tests(problem)
        except NoTests as error:
            return Verdict.fail("no tests", str(error), code)
        return self._run(code, tests)

    def _run(self, code: str, tests: list[Case]) -> Verdict:
        passed, failure, note = 0, None, ""
        deadline = time.monotonic() + self.total_wall_seconds
        for index, case in enumerate(tests):
            if time.monotonic() + self.limits.wall_seconds > deadline:
                failure = failure or (index, "timeout", "")
                note = f"; time budget of {self.total_wall_seconds:g} s spent, {len(tests) - index} tests not run"
                break
            reason, detail = judge(run_python(code + case.suffix, case.stdin, self.limits), case.expected)
            if reason == "passed":
                passed += 1
                continue
            failure = failure or (index, reason, detail)
            if reason == "blocked":
                return Verdict.fail("blocked", f"test {index}: {detail}", code, tests_passed=passed,
                                    tests_total=len(tests))
            if reason == "timeout" and index + 1 < len(tests):
                note = f"; {len(tests) - index - 1} tests after the timeout not run"
                break
        scores = {"tests_passed": passed, "tests_total": len(tests)}
        if failure is None:
            return Verdict(1.0, "passed", scores, extracted=code)
        index, reason, detail = failure
        return Verdict(passed / len(tests), "partial" if passed else reason, scores,
                       f"test {index}: {reason}" + (f": {detail}" if detail else "") + note, code)
