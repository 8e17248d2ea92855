"""Data files -> Problems (rlsd_lab/tasks/dataset.py), the file task, and the committed example datasets."""

import contextlib
import io
import json
import sqlite3
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf.errors import MissingMandatoryValue

from rlsd_lab.tasks import ArithTask, DataError, FileTask, build_task, load_problems
from rlsd_lab.tasks import dataset as dataset_module
from rlsd_lab.tasks.arith import split_of
from rlsd_lab.tasks.examples import EXAMPLES_DIR, write_examples

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIGS = {"math_example": "math", "code_example": "code", "sql_example": "sql", "json_example": "json"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def example_rows(name: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (EXAMPLES_DIR / name / f"{split}.jsonl").read_text().splitlines()]


# ---- loading ----------------------------------------------------------------------------------------------------

def test_native_jsonl_rows(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"prompt": "2+2", "answer": 4},
        "",
        {"prompt": "Solve 2x=8.", "answer": "4", "reference": "x = 8/2 = 4", "verifier": "math", "id": "alg-1",
         "data_source": "mine", "tests": [1, 2], "extra": {"unit": "cm", "tests": [3]}},
    ])
    plain, full = load_problems(path)
    assert (plain.uid, plain.question, plain.answer, plain.solution, plain.messages) == ("train:1", "2+2", "4", "", ())
    assert plain.verifier is None and plain.data_source == ""
    assert plain.extra == {"data_dir": str(tmp_path.resolve())}
    assert (full.uid, full.solution, full.verifier, full.data_source) == ("alg-1", "x = 8/2 = 4", "math", "mine")
    assert full.extra == {"tests": [3], "unit": "cm", "data_dir": str(tmp_path.resolve())}  # `extra` wins


def test_chat_prompt_gives_messages_and_the_last_user_turn_as_question(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "What is 3+4?", "name": "x"}]
    (problem,) = load_problems(write_jsonl(tmp_path / "chat.jsonl", [{"prompt": messages, "answer": "7"}]))
    assert problem.question == "What is 3+4?"
    assert problem.messages == tuple({"role": m["role"], "content": m["content"]} for m in messages)


def test_parquet_cells_become_plain_python(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame([{"prompt": "q1", "answer": 1, "reference": "r1", "tags": ["a", "b"], "meta": {"k": [1, 2]}},
                  {"prompt": "q2", "answer": 2, "reference": None, "tags": [], "meta": {"k": []}}]).to_parquet(path)
    first, second = load_problems(path)
    assert (first.uid, first.answer, first.solution) == ("data:0", "1", "r1")
    assert first.extra == {"tags": ["a", "b"], "meta": {"k": [1, 2]}, "data_dir": str(tmp_path.resolve())}
    assert type(first.extra["tags"]) is list and type(first.extra["meta"]["k"][0]) is int
    assert second.solution == "" and second.extra["tags"] == []


def test_verl_parquet_loads_unchanged(tmp_path):
    path = tmp_path / "verl.parquet"
    rows = [{"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": "How many? Think."}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": "72"},
             "extra_info": {"index": 0, "split": "train", "reference": "48 + 24 = 72"}},
            {"data_source": "openai/gsm8k", "prompt": [{"role": "system", "content": "S"},
                                                       {"role": "user", "content": "Second?"}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": "5"},
             "extra_info": {"index": 1, "split": "train", "reference": None}}]
    pd.DataFrame(rows).to_parquet(path)
    first, second = load_problems(path)
    assert (first.question, first.answer, first.solution, first.data_source) == (
        "How many? Think.", "72", "48 + 24 = 72", "openai/gsm8k")
    assert first.messages == ({"role": "user", "content": "How many? Think."},)
    assert first.extra == {"index": 0, "split": "train", "reference": "48 + 24 = 72", "ability": "math",
                           "ground_truth": "72", "data_dir": str(tmp_path.resolve())}
    assert (second.question, second.solution, len(second.messages)) == ("Second?", "", 2)


def test_verl_non_string_ground_truth_is_json_encoded_and_kept_raw(tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [
        {"prompt": [{"role": "user", "content": "q"}], "reward_model": {"ground_truth": ["1", "one"]},
         "reference": "own reference", "extra_info": {"reference": "ignored"}}])
    (problem,) = load_problems(path)
    assert problem.answer == '["1", "one"]' and problem.extra["ground_truth"] == ["1", "one"]
    assert problem.solution == "own reference"


MALFORMED = [
    ("{not json", "invalid JSON (Expecting property name"),
    ("[1, 2]", "expected an object, got a list"),
    ({"answer": "1"}, "missing prompt"),
    ({"prompt": "q"}, "missing answer"),
    ({"prompt": "   ", "answer": "1"}, "prompt is empty"),
    ({"prompt": 5, "answer": "1"}, "prompt must be a string or a list of {role, content} messages, got an integer"),
    ({"prompt": [], "answer": "1"}, "prompt is an empty list"),
    ({"prompt": ["hi"], "answer": "1"}, "prompt message 0 must be an object with role and content, got a string"),
    ({"prompt": [{"role": "user"}], "answer": "1"}, "prompt message 0 has no 'content'"),
    ({"prompt": [{"role": "user", "content": "a"}, {"content": "b"}], "answer": "1"}, "prompt message 1 has no 'role'"),
    ({"prompt": [{"role": "user", "content": [1]}], "answer": "1"}, "prompt message 0 has a non-string 'content'"),
    ({"prompt": [{"role": "system", "content": "a"}], "answer": "1"}, "prompt messages have no user turn"),
    ({"prompt": "q", "answer": ["1"]}, "answer must be a string or a number, got a list"),
    ({"prompt": "q", "answer": True}, "answer must be a string or a number, got a boolean"),
    ({"prompt": "q", "answer": "1", "reference": 3}, "reference must be a string, got an integer"),
    ({"prompt": "q", "answer": "1", "verifier": 3}, "verifier must be a non-empty string, got an integer"),
    ({"prompt": "q", "answer": "1", "id": [1]}, "id must be a string or an integer, got a list"),
    ({"prompt": "q", "answer": "1", "data_source": 1}, "data_source must be a string"),
    ({"prompt": "q", "answer": "1", "extra": "x"}, "extra must be an object, got a string"),
    ({"prompt": "q", "reward_model": "x"}, "reward_model must be an object with a ground_truth, got a string"),
    ({"prompt": "q", "reward_model": {"style": "rule"}}, "reward_model has no ground_truth"),
    ({"prompt": "q", "reward_model": {"ground_truth": "1"}, "extra_info": [1]}, "extra_info must be an object"),
    ({"prompt": "q", "answer": "1", "id": "train:1"}, "duplicate id 'train:1' (first at line 1)"),
]


@pytest.mark.parametrize(("bad_row", "message"), MALFORMED)
def test_malformed_jsonl_row_names_file_line_and_fault(tmp_path, bad_row, message):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "good", "answer": "1"}, bad_row])
    with pytest.raises(DataError) as error:
        load_problems(path)
    assert str(error.value).startswith(f"{path}: line 2: ")
    assert message in str(error.value)


def test_malformed_parquet_row_names_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pd.DataFrame([{"prompt": "q", "answer": "1"}, {"prompt": "q2", "answer": None}]).to_parquet(path)
    with pytest.raises(DataError, match=r"bad\.parquet: row 1: missing answer"):
        load_problems(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match=r"data\.csv: unsupported file type '\.csv'; valid choices: \.jsonl, \.parquet"):
        load_problems(tmp_path / "data.csv")
    with pytest.raises(FileNotFoundError, match="data file not found: .*absent.jsonl"):
        load_problems(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match=r"empty\.jsonl: no rows"):
        load_problems(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]))
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"garbage\.parquet: not a readable parquet file"):
        load_problems(tmp_path / "garbage.parquet")
    (tmp_path / "latin.jsonl").write_bytes(b'{"prompt": "ok", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl: line 2: not UTF-8"):
        load_problems(tmp_path / "latin.jsonl")


# ---- the file task ----------------------------------------------------------------------------------------------

@pytest.fixture
def pool(tmp_path) -> Path:
    rows = [{"prompt": f"question {i}", "answer": str(i)} for i in range(200)]
    rows[3]["verifier"] = "sql"
    return write_jsonl(tmp_path / "pool.jsonl", rows)


def test_file_task_hash_split_is_disjoint_deterministic_and_in_file_order(pool):
    task = FileTask(pool, val_percent=20)
    train, val = task.problems("train"), task.problems("val")
    assert not {p.uid for p in train} & {p.uid for p in val}
    assert len(train) + len(val) == 200 and 20 <= len(val) <= 60
    assert all(split_of(p.question, 20) == "val" for p in val)
    assert [p.uid for p in train] == sorted((p.uid for p in train), key=lambda uid: int(uid.split(":")[1]))
    assert FileTask(pool, val_percent=20).problems("val") == val


def test_file_task_count_and_default_verifier(pool):
    task = FileTask(pool, verifier="math")
    train = task.problems("train", None, seed=5)
    assert task.problems("train", 0) == train and task.problems("train", 10_000) == train
    assert task.problems("train", 7, seed=1) == train[:7]
    verifiers = {p.uid: p.verifier for p in train + task.problems("val")}
    assert verifiers.pop("pool:4") == "sql" and set(verifiers.values()) == {"math"}
    with pytest.raises(ValueError, match="unknown split 'test'"):
        task.problems("test")
    with pytest.raises(ValueError, match="count must be >= 0"):
        task.problems("train", -1)


def test_file_task_val_path_loads_each_file_once(tmp_path, pool, monkeypatch):
    val = write_jsonl(tmp_path / "val.jsonl", [{"prompt": "held out", "answer": "0"}])
    calls = []
    monkeypatch.setattr(dataset_module, "load_problems", lambda path: calls.append(path) or load_problems(path))
    task = FileTask(pool, val_path=val)
    assert calls == []  # lazy
    assert len(task.problems("train")) == 200 and [p.question for p in task.problems("val")] == ["held out"]
    task.problems("train")
    assert calls == [pool, val]


def test_file_task_empty_split_is_an_error(tmp_path):
    task = FileTask(write_jsonl(tmp_path / "one.jsonl", [{"prompt": "only", "answer": "1"}]))
    with pytest.raises(DataError, match="split is empty: 1 rows, val_percent=10"):
        task.problems("train")


def test_relative_paths_resolve_against_cwd_then_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "local.jsonl", [{"prompt": "q", "answer": "1"}])
    assert FileTask("local.jsonl", val_path="local.jsonl").train_path == tmp_path / "local.jsonl"
    assert FileTask("data/examples/math/train.jsonl").train_path == ROOT / "data/examples/math/train.jsonl"
    with pytest.raises(FileNotFoundError) as error:
        FileTask("nowhere.jsonl")
    assert str(tmp_path / "nowhere.jsonl") in str(error.value) and str(ROOT / "nowhere.jsonl") in str(error.value)


def test_build_task_file_and_arith(pool):
    task = build_task({"name": "file", "train_path": str(pool), "val_path": None, "verifier": "sql",
                       "val_percent": 10, "train_size": None, "val_size": None})
    assert isinstance(task, FileTask) and task.verifier == "sql" and task.problems("val")
    arith = build_task({"name": "arith", "digits": 2, "operands": 2, "operators": ["+"], "val_percent": 10,
                        "train_size": 5, "val_size": 5})
    assert isinstance(arith, ArithTask) and arith.verifier == "arith" and len(arith.problems("train", 5, 0)) == 5


def compose_task(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides).task


@pytest.mark.parametrize(("config", "verifier"), sorted(EXAMPLE_CONFIGS.items()))
def test_example_task_configs_build(config, verifier):
    task = build_task(compose_task([f"task={config}"]))
    train, val = task.problems("train", None, 0), task.problems("val", None, 0)
    assert task.verifier == verifier and train and val
    assert all(p.verifier == verifier and p.solution for p in train + val)


def test_file_config_requires_train_path(pool):
    with pytest.raises(MissingMandatoryValue):
        build_task(compose_task(["task=file"]))
    task = build_task(compose_task(["task=file", f"task.train_path={pool}"]))
    assert task.verifier == "math" and task.problems("train")


# ---- the committed example datasets -----------------------------------------------------------------------------

def test_example_generator_reproduces_the_committed_files(tmp_path):
    written = write_examples(tmp_path)
    committed = sorted(p.relative_to(EXAMPLES_DIR) for p in EXAMPLES_DIR.rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path) for p in written) == committed
    for path in written:
        if path.suffix == ".parquet":  # parquet bytes depend on the pyarrow version: compare the content
            fresh, stored = load_problems(path), load_problems(EXAMPLES_DIR / path.relative_to(tmp_path))
            assert [(p, _without_dir(p.extra)) for p in fresh] == [(p, _without_dir(p.extra)) for p in stored]
        else:
            assert path.read_bytes() == (EXAMPLES_DIR / path.relative_to(tmp_path)).read_bytes(), path


def _without_dir(extra: dict) -> dict:
    return {k: v for k, v in extra.items() if k != "data_dir"}


def test_example_math_rows():
    train, val = example_rows("math", "train"), example_rows("math", "val")
    assert (len(train), len(val)) == (120, 30)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    sums = [r for r in train + val if "+" in r["prompt"] and "boxed" not in r["prompt"]]
    assert len(sums) == 75
    for row in train + val:
        if row in sums:
            assert str(sum(map(int, row["prompt"].split("+")))) == row["answer"]
            assert row["reference"].endswith(f"\nA:{row['answer']}")
        else:
            assert row["reference"].endswith(f"\\boxed{{{row['answer']}}}.") and "\\boxed{}" in row["prompt"]


def test_example_verl_parquet_matches_the_math_rows():
    problems = load_problems(EXAMPLES_DIR / "verl_math" / "train.parquet")
    math_train = example_rows("math", "train")
    assert len(problems) == 40
    for index, (problem, row) in enumerate(zip(problems, math_train)):
        assert (problem.question, problem.answer, problem.solution) == (row["prompt"], row["answer"], row["reference"])
        assert problem.data_source == "rlsd_lab/math_example" and problem.extra["index"] == index


def test_example_sql_gold_queries_run_and_return_rows():
    database = sqlite3.connect(":memory:")
    database.executescript((EXAMPLES_DIR / "sql" / "shop.sql").read_text())
    rows = example_rows("sql", "train") + example_rows("sql", "val")
    assert len(rows) >= 60 and sum("ORDER BY" in r["answer"] for r in rows) >= 10
    for row in rows:
        assert row["answer"] == row["reference"] and row["db"] == "shop.sql"
        result = database.execute(row["answer"]).fetchall()
        assert result and any(value is not None for value in result[0]), row["answer"]


def test_example_json_answers_validate_against_their_schemas():
    jsonschema = pytest.importorskip("jsonschema")
    rows = example_rows("json", "train") + example_rows("json", "val")
    assert len(rows) == 75 and len({r["prompt"] for r in rows}) == 75
    for row in rows:
        jsonschema.Draft202012Validator.check_schema(row["schema"])
        jsonschema.validate(json.loads(row["answer"]), row["schema"])
        assert row["reference"] == row["answer"]


def run_program(source: str, stdin: str) -> str:
    """Runs trusted project code (the reference programs) in this process with `stdin` as standard input."""
    output, saved_stdin = io.StringIO(), sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(output):
            exec(compile(source, "<reference>", "exec"), {"__name__": "__main__"})  # noqa: S102
    finally:
        sys.stdin = saved_stdin
    return output.getvalue()


def test_example_code_tests_agree_with_the_reference_programs():
    rows = example_rows("code", "train") + example_rows("code", "val")
    assert len(rows) == 68 and len({r["prompt"] for r in rows}) == 68
    assert sum(isinstance(r["tests"][0], str) for r in rows) == 8
    for row in rows:
        assert row["answer"] == row["reference"] and 3 <= len(row["tests"]) <= 5
        for test in row["tests"]:
            if isinstance(test, str):  # assert-style: the program defines f, the test calls it
                namespace = {}
                exec(compile(row["reference"], "<reference>", "exec"), namespace)  # noqa: S102
                exec(compile(test, "<test>", "exec"), namespace)  # noqa: S102
            else:
                assert run_program(row["reference"], test["input"]) == test["output"], (row["prompt"], test)
