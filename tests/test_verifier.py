import pytest

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers import build_verifier

PROBLEM = Problem(uid="347+285", question="347+285", answer="632", solution="7+5+0=12\n4+8+1=13\n3+2+1=06\nA:632")


@pytest.mark.parametrize("response, reward, reason", [
    ("7+5+0=12\nA:632", 1.0, "correct"),
    ("A:632", 1.0, "correct"),
    ("A: 632 ", 1.0, "correct"),
    ("A:631", 0.0, "wrong answer"),
    ("A:6320", 0.0, "wrong answer"),
    ("A:0632", 0.0, "wrong answer"),
    ("A:1\nA:632", 1.0, "correct"),  # the last answer marker counts
    ("A:632\nA:1", 0.0, "wrong answer"),
    ("A:632\ntrailing text", 1.0, "correct"),  # only the marker's own line is the answer
    ("", 0.0, "no answer marker"),
    ("632", 0.0, "no answer marker"),
    ("A:", 0.0, "empty answer"),
    ("A:\n632", 0.0, "empty answer"),
    ("A:6x2", 0.0, "answer is not an integer"),
    ("A:６３２", 0.0, "answer is not an integer"),  # full-width digits are not the answer
    ("A:\x00\udcff", 0.0, "answer is not an integer"),
])
def test_arith_verifier_edge_cases(response, reward, reason):
    verdict = build_verifier("arith").score(response, PROBLEM)
    assert (verdict.reward, verdict.reason) == (reward, reason)


def test_unknown_verifier_lists_choices():
    with pytest.raises(ValueError, match="valid choices: arith, code, json, math, sql, a dotted path"):
        build_verifier("nope")
