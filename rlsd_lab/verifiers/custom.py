"""A user's scoring function, named by a dotted path: `verifier=my_pkg.rewards:score` (or `my_pkg.rewards.score`).

Two signatures are recognised:
  * veRL's `compute_score(data_source, solution_str, ground_truth, extra_info=None)`, called unchanged with the
    row's data_source, the response, the ground truth (the raw `reward_model.ground_truth` of veRL rows, else the
    answer) and the row's extras;
  * ours, `fn(response, problem)`.
The function may return a `Verdict`, a number (or bool), or a dict with a `score` (veRL style; other numeric
entries become sub-scores, a `reason` entry is kept). Rewards outside [0, 1] are clipped; the raw value stays in
the sub-score `raw_score` and the reason says so. Exceptions are left to the verifier pool, which turns them into
a reward of 0 and counts them.
"""

from __future__ import annotations

import importlib
import inspect
import math
from numbers import Real

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verdict, Verifier

VERL_PARAMETERS = ("data_source", "solution_str", "ground_truth")


def import_function(path: str):
    """`pkg.module:function` or `pkg.module.function` -> the function, with a clear error if either is missing."""
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"custom verifier {path!r}: expected a dotted path like 'my_pkg.rewards:compute_score'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"custom verifier {path!r}: cannot import module {module_name!r} ({error})") from error
    if not callable(getattr(module, attribute, None)):
        raise ValueError(f"custom verifier {path!r}: module {module_name!r} has no function {attribute!r}")
    return getattr(module, attribute)


def to_verdict(result) -> Verdict:
    """Normalises what a user function returned into a Verdict with a reward in [0, 1]."""
    if isinstance(result, Verdict):
        raw, reason, scores, verdict = result.reward, result.reason, dict(result.scores), result
    elif isinstance(result, dict):
        if "score" not in result:
            return Verdict.fail("invalid reward", f"returned a dict without 'score': {sorted(result)}")
        raw, reason = result["score"], str(result.get("reason", ""))
        scores = {k: float(v) for k, v in result.items() if k != "score" and isinstance(v, Real)}
        verdict = None
    else:
        raw, reason, scores, verdict = result, "", {}, None
    if not isinstance(raw, Real) or not math.isfinite(float(raw)):
        return Verdict.fail("invalid reward", f"returned {raw!r}")
    reward = min(1.0, max(0.0, float(raw)))
    if reward != float(raw):
        scores["raw_score"], reason = float(raw), "clipped score"
    reason = reason or ("full score" if reward == 1 else "partial score" if reward > 0 else "zero score")
    detail, extracted = (verdict.detail, verdict.extracted) if verdict else ("", None)
    return Verdict(reward, reason, scores, detail, extracted)


class CustomVerifier(Verifier):
    name = "custom"

    def __init__(self, path: str, **kwargs):
        self.function, self.kwargs = import_function(path), kwargs
        parameters = inspect.signature(self.function).parameters
        self.verl_style = all(name in parameters for name in VERL_PARAMETERS)

    def score(self, response: str, problem: Problem) -> Verdict:
        if self.verl_style:
            ground_truth = problem.extra.get("ground_truth", problem.answer)
            result = self.function(data_source=problem.data_source, solution_str=response,
                                   ground_truth=ground_truth, extra_info=problem.extra, **self.kwargs)
        else:
            result = self.function(response, problem, **self.kwargs)
        return to_verdict(result)
