"""User reward functions for the tests, imported by dotted path (`tests.helpers.rewards:<name>`)."""

import os
import time

from rlsd_lab.verifiers.base import Verdict


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """veRL's signature, veRL's dict return."""
    return {"score": float(solution_str.strip() == ground_truth), "source_ok": float(data_source == "demo"),
            "extra_seen": float(bool(extra_info and extra_info.get("level") == 3))}


def exact(response, problem):
    return response.strip() == problem.answer


def misbehaving(response, problem):
    """Behaves by the response: hang, die, raise, an out-of-range or non-finite score, or a proper Verdict."""
    if response == "hang":
        time.sleep(3600)
    if response == "die":
        os._exit(7)
    if response == "raise":
        raise RuntimeError("scorer bug")
    if response == "big":
        return 2.5
    if response == "nan":
        return float("nan")
    return Verdict(1.0, "fine")


def flaky_arith(response, problem):
    """Hangs or dies on some responses (by their length), else checks the answer marker like the arith task."""
    if len(response) % 5 == 0:
        time.sleep(3600)
    if len(response) % 5 == 1:
        os._exit(1)
    return response.rsplit("A:", 1)[-1].strip() == problem.answer


def char_parity(response, problem):
    """Right for about half of a random model's responses, so that groups have advantages (arith gives all 0)."""
    return sum(map(ord, response)) % 2 == 0


def all_wrong(response, problem):
    return Verdict(0.0, "wrong answer")


def slow_char_parity(response, problem):
    """char_parity at about 30 ms a response: a run slow enough for a test to signal it between two steps."""
    time.sleep(0.03)
    return char_parity(response, problem)


def answer_residue(response, problem):
    """Right for about a third of the problems even when a model answers every prompt alike (greedy, untrained),
    and a changed response moves the score (modulo 3: a change cannot map the right third onto an equal share)."""
    return (sum(map(ord, response)) + int(problem.answer)) % 3 == 0
