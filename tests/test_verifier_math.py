"""Math answers: extraction forms, equivalence by math-verify, numeric tolerance, hostile text."""

import time

import pytest

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers import build_verifier
from rlsd_lab.verifiers.math_answer import extract_answer, last_boxed


@pytest.mark.parametrize("text, answer, form", [
    (r"so \boxed{\frac{3}{4}} done", r"\frac{3}{4}", "boxed"),
    (r"\boxed{1} then \boxed{\frac{a}{\sqrt{b}}}", r"\frac{a}{\sqrt{b}}", "boxed"),  # the last box, nested braces
    (r"\fbox{7}", "7", "boxed"),
    ("<answer>x = 4</answer>", "x = 4", "answer tag"),
    ("Thus the answer is 12.", "12", "answer phrase"),
    ("The final answer is $\\frac12$\nmore text", "$\\frac12$", "answer phrase"),
    ("Answer: 5", "5", "answer phrase"),
    ("7+5+0=12\nA:632", "632", "answer marker"),
    ("it is 41 or 42", None, ""),
    (r"\boxed{unclosed", None, ""),
])
def test_extraction_forms(text, answer, form):
    assert extract_answer(text) == (answer, form)


def test_last_number_fallback_is_opt_in_and_scores_no_format():
    assert extract_answer("it is 41 or 1,042", fallback_last_number=True) == ("1,042", "last number")
    verdict = build_verifier("math", {"fallback_last_number": True}).score("it is 41 or 42", Problem("p", "q", "42"))
    assert (verdict.reward, verdict.scores["format"]) == (1.0, 0.0)


@pytest.mark.parametrize("response, gold, reward", [
    (r"\boxed{0.75}", r"\frac{3}{4}", 1.0),
    (r"\boxed{\frac{3}{4}}", "0.75", 1.0),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}", 1.0),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),
    ("<answer>x=4</answer>", "4", 1.0),
    (r"\boxed{25\%}", "25", 1.0),
    (r"\boxed{1,000}", "1000", 1.0),
    (r"\boxed{5}", "6", 0.0),
    (r"\boxed{3.1416}", "3.14159", 0.0),  # beyond math-verify's rounding without a tolerance
])
def test_equivalence(response, gold, reward):
    assert build_verifier("math").score(response, Problem("p", "q", gold)).reward == reward


def test_relative_tolerance_option():
    problem = Problem("p", "q", "3.14159")
    assert build_verifier("math", {"rel_tol": 1e-4}).score(r"\boxed{3.1416}", problem).reward == 1.0
    assert build_verifier("math", {"rel_tol": 1e-7}).score(r"\boxed{3.1416}", problem).reward == 0.0


@pytest.mark.parametrize("response, reason", [
    ("", "no answer"),
    (r"\boxed{}", "empty answer"),
    ("\\boxed{" + "(" * 5000 + "}", "answer too long"),
    ("\ud800\udcff \\boxed{\\frac{\ud800}{2}}", "wrong answer"),
    (r"\boxed{\frac{}{}{}}", "wrong answer"),
    ("\x00" * 10_000, "no answer"),
    ("\\boxed{" * 20_000, "no answer"),
])
def test_hostile_text_is_reward_zero_with_a_reason(response, reason):
    started = time.time()
    verdict = build_verifier("math").score(response, Problem("p", "q", "5"))
    assert (verdict.reward, verdict.reason) == (0.0, reason)
    assert time.time() - started < 5


def test_last_boxed_handles_nesting():
    assert last_boxed(r"\boxed{\frac{\sqrt{2}}{2}}") == r"\frac{\sqrt{2}}{2}"
