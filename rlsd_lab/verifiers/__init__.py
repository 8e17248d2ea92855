"""Verifiers turn a response into a reward. `build_verifier` maps a name to one."""

from __future__ import annotations

from rlsd_lab.choices import check_choice
from rlsd_lab.verifiers.arith import ArithVerifier
from rlsd_lab.verifiers.base import Verifier

VERIFIERS = {"arith": ArithVerifier}


def build_verifier(name: str) -> Verifier:
    check_choice("verifier", name, sorted(VERIFIERS))
    return VERIFIERS[name]()


__all__ = ["VERIFIERS", "Verifier", "build_verifier"]
