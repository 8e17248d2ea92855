"""Structured-output verifier: the response must hold JSON that satisfies a JSON Schema, and may have to match
reference values field by field.

Parsing is strict where Python's `json` is lenient, because a reward must not depend on parser quirks: NaN,
Infinity and numbers that overflow to infinity are not JSON (RFC 8259), and an object with a duplicate key is
rejected (parsers disagree on which value wins). Nesting deeper than `max_depth` and candidates longer than
`max_chars` are refused before validation, which bounds its recursion and run time. Remote `$ref`s are never
fetched: the validator gets an empty `referencing` registry, so an unresolvable reference is a bad problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import referencing
import referencing.exceptions
from jsonschema import Draft202012Validator, SchemaError
from jsonschema.validators import validator_for

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verdict, Verifier
from rlsd_lab.verifiers.extract import last_fenced_block, outermost_json_span

DETAIL_CHARS = 300


def extract_json(response: str) -> str:
    """The last ```json block, else the outermost {...} or [...] span, else the whole text; stripped."""
    for candidate in (last_fenced_block(response, ("json",)), outermost_json_span(response)):
        if candidate is not None:
            return candidate.strip()
    return response.strip()


def reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows")
    return value


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def parse_strict(text: str) -> Any:
    """`json.loads` without NaN, Infinity or duplicate keys; raises ValueError (or RecursionError)."""
    return json.loads(text, parse_constant=reject_constant, parse_float=finite_float, object_pairs_hook=unique_keys)


def nesting_depth(value: Any) -> int:
    """The deepest nesting of arrays and objects, walked with a stack: recursion is what deep input breaks."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ==, true is not 1 (while 1 and 1.0 are the same JSON number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_equal, a, b))
    return a == b


@lru_cache(maxsize=256)
def read_schema(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class BadProblem(Exception):
    """The problem row cannot be scored: a missing or invalid schema or reference."""


class JSONSchemaVerifier(Verifier):
    """Reward 0 for a response without valid JSON, else the share of reference fields it matches (1 if none).

    `problem.extra["schema"]` is a schema (a dict, JSON text, or a path to a .json file resolved against
    `extra["data_dir"]`, default "."); `problem.answer` an optional JSON object of reference values, compared
    on its top-level keys or on `extra["match_fields"]`. `check_formats` enforces `format` (email, date, ...),
    which JSON Schema otherwise treats as an annotation.
    """

    name = "json"

    def __init__(self, *, max_chars: int = 100_000, max_depth: int = 64, check_formats: bool = True):
        self.max_chars, self.max_depth, self.check_formats = max_chars, max_depth, check_formats

    def score(self, response: str, problem: Problem) -> Verdict:
        try:
            validator = self._validator(problem)
            reference, fields = self._reference(problem)
        except BadProblem as error:
            return Verdict.fail("bad problem", str(error))

        text = extract_json(response)
        failed = {"parsed": 0.0, "valid": 0.0, "fields_matched": 0.0}
        if not text:
            return Verdict.fail("not json", "empty response", extracted=text, **failed)
        if len(text) > self.max_chars:
            return Verdict.fail("json too large", f"{len(text)} chars, limit {self.max_chars}", **failed)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            return Verdict.fail("malformed unicode", str(error), extracted=text, **failed)
        try:
            value = parse_strict(text)
        except RecursionError:
            return Verdict.fail("too deep", "nesting exceeds the parser's recursion limit", extracted=text, **failed)
        except ValueError as error:
            return Verdict.fail("not json", str(error)[:DETAIL_CHARS], extracted=text, **failed)
        depth = nesting_depth(value)
        if depth > self.max_depth:
            return Verdict.fail("too deep", f"depth {depth}, limit {self.max_depth}", extracted=text, **failed)

        failed["parsed"] = 1.0
        try:
            error = next(validator.iter_errors(value), None)
            detail = None if error is None else f"{error.json_path}: {error.message}"
        except (referencing.exceptions.Unresolvable, RecursionError) as schema_error:
            return Verdict.fail("bad problem", f"schema cannot be applied: {schema_error!r}"[:DETAIL_CHARS])
        except Exception as checker_error:  # noqa: BLE001 - a format checker choking on hostile text ("a{4294967296}")
            detail = f"validator raised {checker_error!r}"
        if detail is not None:
            return Verdict.fail("schema violation", detail[:DETAIL_CHARS], extracted=text, **failed)

        mismatched = [key for key in fields if not (isinstance(value, dict) and key in value
                                                    and json_equal(value[key], reference[key]))]
        share = 1.0 - len(mismatched) / len(fields) if fields else 1.0
        scores = {"parsed": 1.0, "valid": 1.0, "fields_matched": share}
        if mismatched:
            return Verdict(share, "field mismatch", scores, f"mismatched: {mismatched}"[:DETAIL_CHARS], text)
        return Verdict(1.0, "correct", scores, extracted=text)

    def _validator(self, problem: Problem):
        """The schema's own validator class (by `$schema`, default draft 2020-12), after checking the schema."""
        schema = problem.extra.get("schema")
        try:
            if isinstance(schema, str) and schema.lstrip().startswith("{"):
                schema = json.loads(schema)
            elif isinstance(schema, str):
                schema = read_schema(Path(problem.extra.get("data_dir") or ".") / schema)
            if not isinstance(schema, (dict, bool)):
                raise BadProblem(f"extra['schema'] must be a JSON Schema, got {type(schema).__name__}")
            cls = validator_for(schema, default=Draft202012Validator)
            cls.check_schema(schema)
        except (OSError, ValueError, TypeError, OverflowError, RecursionError, SchemaError) as error:
            raise BadProblem(f"schema: {getattr(error, 'message', error)}"[:DETAIL_CHARS]) from None
        format_checker = cls.FORMAT_CHECKER if self.check_formats else None
        return cls(schema, registry=referencing.Registry(), format_checker=format_checker)

    @staticmethod
    def _reference(problem: Problem) -> tuple[dict[str, Any], list[str]]:
        """The reference object and the fields to compare; no reference compares none."""
        if not problem.answer.strip():
            return {}, []
        try:
            reference = parse_strict(problem.answer)
        except ValueError as error:
            raise BadProblem(f"reference is not JSON: {error}"[:DETAIL_CHARS]) from None
        if not isinstance(reference, dict):
            raise BadProblem("the reference must be a JSON object")
        fields = problem.extra.get("match_fields", list(reference))
        if isinstance(fields, str) or not isinstance(fields, Iterable) or not all(
                isinstance(key, str) and key in reference for key in fields):
            raise BadProblem(f"match_fields must be a list of reference keys, got {fields!r}"[:DETAIL_CHARS])
        return reference, list(fields)
