"""Problems from data files (JSONL or parquet), and the `file` task that serves them as train/val splits.

Native row layout (one JSON object per JSONL line, or one parquet row):

    prompt       str, or a list of {"role", "content"} messages (then `question` is the last user turn)   required
    answer       str; a number is turned into its str                                                      required
    reference    str: the privileged worked solution / reference program / gold query -> Problem.solution
    verifier     str: a verifier name or dotted path that overrides the task's verifier for this row
    id           str or int -> Problem.uid; default "<file stem>:<line>" (parquet: "<file stem>:<row>")
    data_source  str
    extra        dict, merged into Problem.extra (its entries win over top-level keys of the same name)
    any other    copied into Problem.extra as is (e.g. "tests", "db", "schema")

veRL row layout, recognised by a `reward_model` key (veRL parquet files load unchanged):

    prompt        chat messages (a str is accepted too)
    reward_model  {"ground_truth": ..., "style": ...}: a str ground truth is the answer, any other is JSON-encoded;
                  the raw value is also kept as extra["ground_truth"] for veRL-style scorers
    extra_info    dict, merged into Problem.extra (its entries win); its "reference" is the solution unless the
                  row has its own `reference`
    ability       kept as extra["ability"]
    data_source, reference, verifier, id, extra and any other key: as in the native layout

A null value (JSON null, a missing parquet cell) counts as an absent key. Every problem gets
`extra["data_dir"]`, the absolute directory of its file, so verifiers can resolve relative paths (a database,
a schema) against it. Malformed rows fail at load time with a `DataError` naming the file, the line (JSONL,
1-based) or row (parquet, 0-based) and the fault, so a bad file never reaches training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from rlsd_lab.tasks.arith import split_of
from rlsd_lab.tasks.problem import Problem

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NATIVE_KEYS = ("prompt", "answer", "reference", "verifier", "id", "data_source", "extra")
VERL_KEYS = ("prompt", "reward_model", "extra_info", "ability", "reference", "verifier", "id", "data_source", "extra")


class DataError(ValueError):
    """A data file that cannot be turned into problems."""


def load_problems(path: str | Path) -> list[Problem]:
    """Every row of a `.jsonl` or `.parquet` file as a `Problem`, in file order."""
    path = Path(path)
    readers = {".jsonl": _jsonl_rows, ".parquet": _parquet_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
                        f"valid choices: {', '.join(readers)}")
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    data_dir = str(path.resolve().parent)
    problems, first_seen = [], {}
    for where, number, row in reader(path):
        try:
            problem = _problem(row, f"{path.stem}:{number}", data_dir)
        except DataError as error:
            raise DataError(f"{path}: {where}: {error}") from None
        if problem.uid in first_seen:
            raise DataError(f"{path}: {where}: duplicate id {problem.uid!r} (first at {first_seen[problem.uid]})")
        first_seen[problem.uid] = where
        problems.append(problem)
    if not problems:
        raise DataError(f"{path}: no rows")
    return problems


def _jsonl_rows(path: Path) -> Iterator[tuple[str, int, Any]]:
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            where = f"line {number}"
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}: {where}: not UTF-8 ({error.reason} at byte {error.start})") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}: {where}: invalid JSON ({error.msg} at column {error.colno})") from None
            yield where, number, row


def _parquet_rows(path: Path) -> Iterator[tuple[str, int, Any]]:
    import pandas as pd  # imported here: verifier worker processes import this package and never read parquet

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable parquet file ({error})") from None
    for number, record in enumerate(frame.to_dict(orient="records")):
        yield f"row {number}", number, {str(key): _plain(value) for key, value in record.items()}


def _plain(value: Any) -> Any:
    """A parquet cell as plain Python: numpy arrays become lists, numpy scalars Python values, NaN/NA None."""
    import numpy as np

    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if (isinstance(value, float) and math.isnan(value)) or type(value).__name__ == "NAType":
        return None
    return value


def _problem(row: Any, default_uid: str, data_dir: str) -> Problem:
    if not isinstance(row, dict):
        raise DataError(f"expected an object, got {_kind(row)}")
    row = {key: value for key, value in row.items() if value is not None}
    answer, reference, extra = _verl_fields(row) if "reward_model" in row else _native_fields(row)
    question, messages = _prompt(row)
    if reference is not None and not isinstance(reference, str):
        raise DataError(f"reference must be a string, got {_kind(reference)}")
    verifier = row.get("verifier")
    if verifier is not None and not (isinstance(verifier, str) and verifier):
        raise DataError(f"verifier must be a non-empty string, got {_kind(verifier) if verifier else repr(verifier)}")
    uid = row.get("id", default_uid)
    if isinstance(uid, bool) or not isinstance(uid, (str, int)):
        raise DataError(f"id must be a string or an integer, got {_kind(uid)}")
    data_source = row.get("data_source", "")
    if not isinstance(data_source, str):
        raise DataError(f"data_source must be a string, got {_kind(data_source)}")
    extra["data_dir"] = data_dir
    return Problem(uid=str(uid), question=question, answer=answer, solution=reference or "", messages=messages,
                   verifier=verifier, extra=extra, data_source=data_source)


def _native_fields(row: dict) -> tuple[str, Any, dict]:
    if "answer" not in row:
        raise DataError("missing answer")
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise DataError(f"answer must be a string or a number, got {_kind(answer)}")
    return str(answer), row.get("reference"), _extra(row, NATIVE_KEYS)


def _verl_fields(row: dict) -> tuple[str, Any, dict]:
    reward_model = row["reward_model"]
    if not isinstance(reward_model, dict):
        raise DataError(f"reward_model must be an object with a ground_truth, got {_kind(reward_model)}")
    ground_truth = reward_model.get("ground_truth")
    if ground_truth is None:
        raise DataError("reward_model has no ground_truth")
    if isinstance(ground_truth, str):
        answer = ground_truth
    else:
        try:
            answer = json.dumps(ground_truth)
        except (TypeError, ValueError):
            raise DataError(f"reward_model.ground_truth is not JSON-encodable ({_kind(ground_truth)})") from None
    extra_info = _mapping(row, "extra_info")
    extra = _extra(row, VERL_KEYS) | extra_info
    if "ability" in row:
        extra["ability"] = row["ability"]
    extra["ground_truth"] = ground_truth
    return answer, row.get("reference", extra_info.get("reference")), extra


def _extra(row: dict, known: tuple[str, ...]) -> dict:
    """The row's own keys beyond the layout's, then its `extra` dict on top."""
    return {key: value for key, value in row.items() if key not in known} | _mapping(row, "extra")


def _mapping(row: dict, key: str) -> dict:
    value = row.get(key, {})
    if not isinstance(value, dict):
        raise DataError(f"{key} must be an object, got {_kind(value)}")
    return dict(value)


def _prompt(row: dict) -> tuple[str, tuple[dict[str, str], ...]]:
    """(question, messages): a plain prompt has no messages; a chat prompt's question is its last user turn."""
    if "prompt" not in row:
        raise DataError("missing prompt")
    prompt = row["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError("prompt is empty")
        return prompt, ()
    if not isinstance(prompt, list):
        raise DataError(f"prompt must be a string or a list of {{role, content}} messages, got {_kind(prompt)}")
    if not prompt:
        raise DataError("prompt is an empty list of messages")
    messages = []
    for index, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise DataError(f"prompt message {index} must be an object with role and content, got {_kind(message)}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                problem = "has no" if message.get(key) is None else "has a non-string"
                raise DataError(f"prompt message {index} {problem} {key!r}")
        messages.append({"role": message["role"], "content": message["content"]})
    user_turns = [message["content"] for message in messages if message["role"] == "user"]
    if not user_turns:
        raise DataError("prompt messages have no user turn")
    return user_turns[-1], tuple(messages)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def resolve_data_path(path: str | Path) -> Path:
    """A relative path is looked up in the working directory (a path typed on the command line), then in the
    project root (the paths in conf/task/*.yaml), so runs work from any directory."""
    path = Path(path).expanduser()
    candidates = [path] if path.is_absolute() else list(dict.fromkeys([Path.cwd() / path, PROJECT_ROOT / path]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"data file {str(path)!r} not found; looked at: {', '.join(map(str, candidates))}")


class FileTask:
    """Problems read from data files: `train_path` and `val_path`, or, without `val_path`, a split of
    `train_path` by a hash of each question (`val_percent`% to validation), disjoint and the same on every run.

    Rows without a `verifier` of their own get the task's, so every problem names the verifier that scores it.
    """

    name = "file"

    def __init__(self, train_path: str | Path, val_path: str | Path | None = None, verifier: str = "math",
                 val_percent: int = 10):
        if not isinstance(verifier, str) or not verifier:
            raise ValueError(f"file task verifier must be a non-empty name, got {verifier!r}")
        if val_path is None and not 0 < val_percent < 100:
            raise ValueError(f"file task val_percent must be in 1..99 without a val_path, got {val_percent}")
        self.train_path = resolve_data_path(train_path)
        self.val_path = resolve_data_path(val_path) if val_path is not None else None
        self.verifier, self.val_percent = verifier, val_percent
        self._splits: dict[str, list[Problem]] | None = None

    def problems(self, split: str, count: int | None = None, seed: int = 0) -> list[Problem]:
        """The rows of `split` ('train' or 'val') in file order: all of them when `count` is None, 0 or at least
        the number available, else the first `count`. `seed` is ignored: a file has one order, and the trainer
        shuffles its prompt pool itself."""
        if split not in ("train", "val"):
            raise ValueError(f"unknown split {split!r}; valid choices: train, val")
        if count is not None and count < 0:
            raise ValueError(f"problem count must be >= 0 or null (all), got {count}")
        rows = self._load()[split]
        return rows[:count] if count else list(rows)

    def _load(self) -> dict[str, list[Problem]]:
        if self._splits is None:
            train = self._with_verifier(load_problems(self.train_path))
            if self.val_path is not None:
                self._splits = {"train": train, "val": self._with_verifier(load_problems(self.val_path))}
            else:
                self._splits = {name: [p for p in train if split_of(p.question or p.uid, self.val_percent) == name]
                                for name in ("train", "val")}
                for name, rows in self._splits.items():
                    if not rows:
                        raise DataError(f"{self.train_path}: the {name} split is empty: {len(train)} rows, "
                                        f"val_percent={self.val_percent}; give a val_path or change val_percent")
        return self._splits

    def _with_verifier(self, problems: list[Problem]) -> list[Problem]:
        return [p if p.verifier else replace(p, verifier=self.verifier) for p in problems]
