"""Batch scoring in worker processes, so that no verifier can stop training.

Every response is scored as its own task in a `pebble` process pool with a per-item timeout: a verifier that
hangs is killed (reason `verifier timeout`), one whose process dies (a segfault, `os._exit`, the OOM killer) is
replaced (`verifier crashed`), one that raises is caught (`verifier error`). Each of these is a reward of 0 and
is counted in the step's metrics (`verify/failures`). `workers=0` scores in the training process instead: fine
for trusted verifiers and debugging, but then only exceptions are caught, not hangs or crashes.

Workers come from a `forkserver`, not from forking the trainer, so they inherit none of its threads or locks.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout

from pebble import ProcessExpired, ProcessPool

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers import build_verifier, is_custom
from rlsd_lab.verifiers.base import Verdict, Verifier

FAILURE_REASONS = ("verifier timeout", "verifier crashed", "verifier error")
_BUILT: dict[tuple[str, str], Verifier] = {}  # per process: verifiers are built once, then reused


def _checked(verdict) -> Verdict:
    """A verifier's own result, refused when it breaks the contract (not a Verdict, reward outside [0, 1])."""
    if not isinstance(verdict, Verdict):
        return Verdict.fail("verifier error", f"returned {type(verdict).__name__}, not a Verdict")
    if not isinstance(verdict.reward, (int, float)) or not math.isfinite(verdict.reward) \
            or not 0.0 <= verdict.reward <= 1.0:
        return Verdict.fail("verifier error", f"reward {verdict.reward!r} is not in [0, 1]")
    return verdict


def score_one(spec: str, options: dict, response: str, problem: Problem) -> Verdict:
    key = (spec, json.dumps(options, sort_keys=True, default=str))
    if key not in _BUILT:
        _BUILT[key] = build_verifier(spec, options)
    return _checked(_BUILT[key].score(response, problem))


def _failure(error: BaseException, timeout_s: float) -> Verdict:
    if isinstance(error, FutureTimeout):
        return Verdict.fail("verifier timeout", f"no result within {timeout_s:g} s")
    if isinstance(error, ProcessExpired):
        return Verdict.fail("verifier crashed", f"worker died with exit code {error.exitcode}")
    return Verdict.fail("verifier error", f"{type(error).__name__}: {error}"[:500])


class VerifierPool:
    """Scores (response, problem) pairs with each problem's verifier (`problem.verifier`, else `default`)."""

    def __init__(self, default: str, options: Mapping[str, Mapping] | None = None, workers: int = 2,
                 timeout_s: float = 30.0):
        self.default, self.workers, self.timeout_s = default, workers, timeout_s
        self.options = {name: dict(value) for name, value in (options or {}).items()}
        self._pool: ProcessPool | None = None

    def options_for(self, spec: str) -> dict:
        return self.options.get("custom" if is_custom(spec) else spec, {})

    def check(self, specs) -> None:
        """Builds each distinct verifier once here, so that a configuration error stops the run at start."""
        for spec in sorted(set(specs)):
            build_verifier(spec, self.options_for(spec))

    def score_batch(self, responses: list[str], problems: list[Problem]) -> list[Verdict]:
        specs = [problem.verifier or self.default for problem in problems]
        if self.workers == 0:
            return [self._score_here(*item) for item in zip(specs, responses, problems)]
        if self._pool is None:
            self._pool = ProcessPool(max_workers=self.workers, context=multiprocessing.get_context("forkserver"))
        futures = [self._pool.schedule(score_one, args=(spec, self.options_for(spec), response, problem),
                                       timeout=self.timeout_s)
                   for spec, response, problem in zip(specs, responses, problems)]
        verdicts = []
        for future in futures:
            try:
                verdicts.append(future.result())
            except Exception as error:  # noqa: BLE001 - any failure of a verifier is a reward of 0, never a crash
                verdicts.append(_failure(error, self.timeout_s))
        return verdicts

    def _score_here(self, spec: str, response: str, problem: Problem) -> Verdict:
        try:
            return score_one(spec, self.options_for(spec), response, problem)
        except Exception as error:  # noqa: BLE001
            return _failure(error, self.timeout_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None
