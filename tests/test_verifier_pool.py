"""The verifier pool: isolation from hangs, crashes and exceptions; custom scorers (ours and veRL's)."""

import time

import pytest

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers import build_verifier
from rlsd_lab.verifiers.custom import to_verdict
from rlsd_lab.verifiers.pool import VerifierPool

PROBLEM = Problem("p", "question", "42", data_source="demo", extra={"level": 3})
MISBEHAVING = "tests.helpers.rewards:misbehaving"


def test_hangs_crashes_and_exceptions_cost_one_reward_each_and_nothing_else():
    pool = VerifierPool(MISBEHAVING, workers=2, timeout_s=1.0)
    responses = ["ok", "hang", "die", "raise", "big", "nan", "ok"]
    try:
        started = time.time()
        verdicts = pool.score_batch(responses, [PROBLEM] * len(responses))
        elapsed = time.time() - started
        again = pool.score_batch(["ok"], [PROBLEM])  # the pool replaced its dead and killed workers
    finally:
        pool.close()
    assert [v.reason for v in verdicts] == ["fine", "verifier timeout", "verifier crashed", "verifier error",
                                           "clipped score", "invalid reward", "fine"]
    assert [v.reward for v in verdicts] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert verdicts[4].scores["raw_score"] == 2.5
    assert "scorer bug" in verdicts[3].detail
    assert elapsed < 8.0  # one timeout of 1 s, plus process start-up; not the scorer's hour
    assert again[0].reward == 1.0


def test_in_process_scoring_still_catches_exceptions():
    pool = VerifierPool(MISBEHAVING, workers=0)
    verdicts = pool.score_batch(["raise", "ok"], [PROBLEM, PROBLEM])
    assert [(v.reward, v.reason) for v in verdicts] == [(0.0, "verifier error"), (1.0, "fine")]


def test_rows_choose_their_own_verifier():
    rows = [Problem("a", "1+1", "2"), Problem("b", "x", "42", verifier="tests.helpers.rewards:exact")]
    verdicts = VerifierPool("arith", workers=0).score_batch(["A:2", "42"], rows)
    assert [(v.reward, v.reason) for v in verdicts] == [(1.0, "correct"), (1.0, "full score")]


def test_verl_compute_score_works_unchanged():
    verifier = build_verifier("tests.helpers.rewards.compute_score")
    verdict = verifier.score(" 42 ", PROBLEM)
    assert verdict.reward == 1.0
    assert verdict.scores == {"source_ok": 1.0, "extra_seen": 1.0}
    assert verifier.score("41", PROBLEM).reason == "zero score"
    raw_ground_truth = Problem("p", "q", '["42"]', extra={"ground_truth": "42"})  # veRL rows keep the raw value
    assert verifier.score("42", raw_ground_truth).reward == 1.0


@pytest.mark.parametrize("returned, reward, reason", [
    (True, 1.0, "full score"), (0, 0.0, "zero score"), (0.25, 0.25, "partial score"), (-1, 0.0, "clipped score"),
    ({"score": 1, "reason": "custom"}, 1.0, "custom"), ({"acc": 1}, 0.0, "invalid reward"),
    ("1", 0.0, "invalid reward"), (float("inf"), 0.0, "invalid reward"),
])
def test_user_return_values_are_normalised(returned, reward, reason):
    verdict = to_verdict(returned)
    assert (verdict.reward, verdict.reason) == (reward, reason)


@pytest.mark.parametrize("spec, message", [
    ("nope", "valid choices: arith, code, json, math, sql, a dotted path"),
    ("no_such_module.fn", "cannot import module 'no_such_module'"),
    ("tests.helpers.rewards:missing", "has no function 'missing'"),
])
def test_bad_verifier_names_are_explained_at_start(spec, message):
    with pytest.raises(ValueError, match=message):
        VerifierPool("arith").check(["arith", spec])
