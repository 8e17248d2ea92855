import json
import socket
import time

import pytest

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers import build_verifier
from rlsd_lab.verifiers.json_schema import JSONSchemaVerifier, extract_json

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age"],
}
REFERENCE = '{"name": "ann", "age": 30}'


def make_problem(answer=REFERENCE, schema=SCHEMA, **extra):
    return Problem(uid="j", question="?", answer=answer, extra={"schema": schema, **extra})


def score(response, problem=None, **options):
    return JSONSchemaVerifier(**options).score(response, problem or make_problem())


def test_registered_by_name():
    assert isinstance(build_verifier("json", {"max_depth": 8}), JSONSchemaVerifier)


@pytest.mark.parametrize("response, reward, reason", [
    ('```json\n{"name": "ann", "age": 30}\n```', 1.0, "correct"),
    ('Sure! Here it is: {"name": "ann", "age": 30, "tags": ["a"]} Hope it helps.', 1.0, "correct"),
    ('```json\n{"name": "x", "age": 1}\n```\n```json\n{"age": 30.0, "name": "ann"}\n```', 1.0, "correct"),
    ('{"name": "ann", "age": 31}', 0.5, "field mismatch"),
    ('{"name": "bob", "age": 31}', 0.0, "field mismatch"),
    ('{"name": "ann"}', 0.0, "schema violation"),
    ('{"name": "ann", "age": -1}', 0.0, "schema violation"),
    ('{"name": "ann", "age": 30, "email": "not-an-email"}', 0.0, "schema violation"),
    ("[1, 2]", 0.0, "schema violation"),
    ("the answer is ann, 30", 0.0, "not json"),
    ('{"name": "ann", "age": 30', 0.0, "not json"),
])
def test_score(response, reward, reason):
    verdict = score(response)
    assert (verdict.reward, verdict.reason) == (reward, reason)
    assert verdict.scores["parsed"] == (reason != "not json")
    assert verdict.scores["valid"] == (reason in ("correct", "field mismatch"))
    assert verdict.scores["fields_matched"] == reward


def test_violation_detail_names_the_first_error():
    assert "'age' is a required property" in score('{"name": "ann"}').detail


def test_formats_can_be_annotations():
    response = '{"name": "ann", "age": 30, "email": "not-an-email"}'
    assert score(response, check_formats=False).reason == "correct"


def test_no_reference_means_valid_is_enough():
    verdict = score('{"name": "bob", "age": 1}', make_problem(answer=""))
    assert (verdict.reward, verdict.scores["fields_matched"]) == (1.0, 1.0)


def test_match_fields_restricts_the_comparison():
    assert score('{"name": "ann", "age": 99}', make_problem(match_fields=["name"])).reward == 1.0


@pytest.mark.parametrize("reference, response, reward", [
    ('{"flag": true}', '{"flag": 1}', 0.0),  # JSON true is not the number 1
    ('{"n": 1}', '{"n": 1.0}', 1.0),  # but 1 and 1.0 are the same number
    ('{"v": {"a": [1, false]}}', '{"v": {"a": [1, false]}}', 1.0),
    ('{"v": {"a": [1, false]}}', '{"v": {"a": [1, 0]}}', 0.0),
    ('{"v": [1, 2]}', '{"v": [2, 1]}', 0.0),
])
def test_field_equality_is_json_equality(reference, response, reward):
    assert score(response, make_problem(answer=reference, schema={})).reward == reward


def test_schema_sources(tmp_path):
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    response = '{"name": "ann", "age": 30}'
    assert score(response, make_problem(schema="schema.json", data_dir=str(tmp_path))).reason == "correct"
    assert score(response, make_problem(schema=json.dumps(SCHEMA))).reason == "correct"
    assert score('{"name": "ann"}', make_problem(schema=json.dumps(SCHEMA))).reason == "schema violation"


def test_schema_draft_follows_dollar_schema():
    # A list under "items" is a tuple in draft 7 and not allowed in draft 2020-12.
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]}
    assert score('["a", 1]', make_problem(answer="", schema=draft7)).reason == "correct"
    assert score("[1]", make_problem(answer="", schema=draft7)).reason == "schema violation"
    assert score("[1]", make_problem(answer="", schema={"items": [{"type": "string"}]})).reason == "bad problem"


@pytest.mark.parametrize("answer, schema, extra", [
    (REFERENCE, None, {}),
    (REFERENCE, {"type": "nonsense"}, {}),
    (REFERENCE, "missing.json", {}),
    (REFERENCE, "{not json", {}),
    (REFERENCE, 42, {}),
    ("[1, 2]", SCHEMA, {}),
    ("{bad", SCHEMA, {}),
    (REFERENCE, SCHEMA, {"match_fields": ["name", "nickname"]}),
    (REFERENCE, SCHEMA, {"match_fields": "name"}),
    (REFERENCE, SCHEMA, {"match_fields": 3}),
    (REFERENCE, {"$ref": "#"}, {}),  # a reference loop
    (REFERENCE, {"pattern": "a{4294967296}"}, {}),  # re.compile raises OverflowError, not re.error
    (REFERENCE, {"$schema": ["x"]}, {}),
], ids=["no-schema", "invalid-schema", "missing-file", "bad-schema-text", "schema-not-object", "reference-not-object",
        "reference-not-json", "unknown-match-field", "match-fields-string", "match-fields-int", "ref-loop",
        "overflowing-pattern", "unhashable-dollar-schema"])
def test_bad_problem(answer, schema, extra):
    verdict = score('{"name": "ann", "age": 30}', make_problem(answer=answer, schema=schema, **extra))
    assert (verdict.reward, verdict.reason) == (0.0, "bad problem")


def test_remote_ref_is_never_fetched(monkeypatch):
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    schema = {"properties": {"name": {"$ref": "https://example.com/name.schema.json"}}}
    start = time.monotonic()
    verdict = score('{"name": "ann", "age": 30}', make_problem(schema=schema))
    assert (verdict.reward, verdict.reason) == (0.0, "bad problem")
    assert "example.com" in verdict.detail
    assert attempts == [] and time.monotonic() - start < 1.0


MEGABYTE = 1_000_000
HOSTILE = {
    "empty": ("", {"not json"}),
    "whitespace": ("  \n ", {"not json"}),
    "nan": ('{"name": "ann", "age": NaN}', {"not json"}),
    "infinity": ('{"name": "ann", "age": -Infinity}', {"not json"}),
    "overflowing-float": ('{"name": "ann", "age": 1e999}', {"not json"}),
    "huge-integer": ('{"name": "ann", "age": ' + "9" * 5000 + "}", {"not json"}),
    "duplicate-key": ('{"name": "ann", "age": 30, "age": 31}', {"not json"}),
    "lone-surrogate": ('{"name": "\ud800", "age": 30}', {"malformed unicode"}),
    "deep-open": ("[" * 100_000, {"too deep", "not json"}),
    "deep-balanced": ("[" * 40_000 + "]" * 40_000, {"too deep"}),
    "deep-parseable": ('{"name": "ann", "age": 30, "tags": ' + "[" * 65 + "]" * 65 + "}", {"too deep"}),
    "megabyte-junk": ("x" * MEGABYTE, {"json too large", "not json"}),
    "megabyte-brackets": ("{" * MEGABYTE, {"json too large"}),
    "megabyte-array": (json.dumps(["tag"] * (MEGABYTE // 7)), {"json too large"}),
    "hostile-regex-format": ('{"p": "a{4294967296}"}', {"schema violation"}),
}
REGEX_SCHEMA = {"properties": {"p": {"type": "string", "format": "regex"}}}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_output(case):
    response, reasons = HOSTILE[case]
    schema = REGEX_SCHEMA if case == "hostile-regex-format" else SCHEMA
    start = time.monotonic()
    verdict = score(response, make_problem(answer="", schema=schema))
    assert time.monotonic() - start < 1.0
    assert verdict.reward == 0.0 and verdict.reason in reasons, verdict.reason


def test_megabyte_of_prose_around_small_json_is_fine():
    start = time.monotonic()
    assert score("x" * MEGABYTE + '\n{"name": "ann", "age": 30}\n' + "y" * MEGABYTE).reason == "correct"
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("response, extracted", [
    ('```json\n{"a": 1}\n```', '{"a": 1}'),
    ('text {"a": {"b": 2}} more } text', '{"a": {"b": 2}} more }'),  # the parser then rejects the trailing text
    ("list: [1, [2]] end", "[1, [2]]"),
    ('  "plain string"  ', '"plain string"'),
])
def test_extract_json(response, extracted):
    assert extract_json(response) == extracted
