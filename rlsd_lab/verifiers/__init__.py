"""Verifiers turn a response into a reward. `build_verifier` maps a name (or a dotted path) to one.

Classes are imported on first use: a worker process that only scores arithmetic never imports sympy.
"""

from __future__ import annotations

import importlib

from rlsd_lab.choices import unknown_choice
from rlsd_lab.verifiers.base import Verdict, Verifier

VERIFIERS = {
    "arith": "rlsd_lab.verifiers.arith:ArithVerifier",
    "math": "rlsd_lab.verifiers.math_answer:MathVerifier",
    "code": "rlsd_lab.verifiers.code:CodeVerifier",
    "sql": "rlsd_lab.verifiers.sql:SQLVerifier",
    "json": "rlsd_lab.verifiers.json_schema:JSONSchemaVerifier",
}
CUSTOM_HINT = "a dotted path to your function (e.g. my_pkg.rewards:compute_score)"


def is_custom(spec: str) -> bool:
    return "." in spec or ":" in spec


def build_verifier(spec: str, options: dict | None = None) -> Verifier:
    """A registered verifier by name, or a user function by dotted path; `options` are its keyword arguments."""
    options = dict(options or {})
    if is_custom(spec):
        from rlsd_lab.verifiers.custom import CustomVerifier
        return CustomVerifier(spec, **options)
    if spec not in VERIFIERS:
        raise unknown_choice("verifier", spec, [*sorted(VERIFIERS), CUSTOM_HINT])
    module_name, class_name = VERIFIERS[spec].split(":")
    return getattr(importlib.import_module(module_name), class_name)(**options)


__all__ = ["VERIFIERS", "Verdict", "Verifier", "build_verifier", "is_custom"]
