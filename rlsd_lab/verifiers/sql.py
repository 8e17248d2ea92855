"""Execution-match verifier for text-to-SQL: run the model's query and the gold query, compare the results.

The model's query is hostile input, so it runs in a sandbox built from sqlite3 itself: the database opens
read-only (a file with `mode=ro`; a `.sql` script is loaded into a fresh in-memory database per call), `PRAGMA
query_only` is on, an authorizer allows only reads, selects and functions outside a deny list (so no writes,
ATTACH, PRAGMA or extension loading), a progress handler enforces the time limit and at most `max_rows` rows
are fetched.

Results are equal when they hold the same rows: as lists when the gold query orders its result (a top-level
ORDER BY, see `orders_result`), else as multisets. Floats are rounded to `float_digits` significant digits
first, and 2 equals 2.0, so a query that computes the same number another way still matches (two values on
either side of a rounding boundary do not: rare, accepted). Column names are not compared, column order is.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path

from rlsd_lab.prompts import ANSWER_MARKER
from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers.base import Verdict, Verifier
from rlsd_lab.verifiers.extract import after_last_marker, last_fenced_block

ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
DENIED_FUNCTIONS = {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"}
MAX_VALUE_BYTES = 10_000_000  # longest string or blob a query may build (randomblob(1e9) would take 1 GB)
PROGRESS_EVERY = 1_000  # virtual-machine steps between time checks
GOLD_CACHE_SIZE = 4_096
# String literals, quoted identifiers and comments, removed before looking for a top-level ORDER BY.
QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL)
ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


class QueryFailed(Exception):
    """A query did not produce a result; `reason` is the verdict category."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def orders_result(query: str) -> bool:
    """Whether `query` has an ORDER BY outside parentheses, strings and comments: one that orders its result.

    ORDER BY inside a subquery, a CTE body or a window (`OVER (ORDER BY ...)`) is nested in parentheses and
    does not count.
    """
    depth, top_level = 0, []
    for char in QUOTED.sub(" ", query):
        depth += (char == "(") - (char == ")")
        top_level.append(char if depth == 0 else " ")
    return bool(ORDER_BY.search("".join(top_level)))


def canonical_row(row: tuple, digits: int) -> tuple:
    return tuple(float(f"{value:.{digits}g}") if isinstance(value, float) else value for value in row)


@lru_cache(maxsize=64)
def read_script(path: Path) -> str:
    return path.read_text(encoding="utf-8")


class SQLVerifier(Verifier):
    """Reward 1 when the model's query returns the gold query's result on the problem's database.

    `problem.answer` is the gold query; `problem.extra["db"]` a SQLite database file or a `.sql` script, a
    relative path resolved against `extra["data_dir"]` (default "."). Any suffix other than `.sql` is opened
    as a database file.
    """

    name = "sql"

    def __init__(self, *, time_limit_s: float = 2.0, max_rows: int = 10_000, float_digits: int = 6):
        self.time_limit_s, self.max_rows, self.float_digits = time_limit_s, max_rows, float_digits
        self._gold: dict[tuple[Path, str], list[tuple]] = {}

    def score(self, response: str, problem: Problem) -> Verdict:
        db = problem.extra.get("db")
        if not db or not isinstance(db, (str, Path)) or not problem.answer.strip():
            return Verdict.fail("bad problem", "the problem needs extra['db'] and a gold query as its answer")
        path = Path(problem.extra.get("data_dir") or ".") / db
        if not path.is_file():
            return Verdict.fail("bad problem", f"no database at {path}")
        try:
            gold = self._gold_rows(path, problem.answer)
        except QueryFailed as error:
            return Verdict.fail("bad problem", f"gold query: {error.reason}: {error.detail}")

        query = extract_query(response)
        if not query:
            return Verdict.fail("no query", extracted=query, executed=0.0)
        try:
            query.encode("utf-8")
        except UnicodeEncodeError as error:
            return Verdict.fail("malformed unicode", str(error), extracted=query, executed=0.0)
        try:
            rows = self._run(path, query)
        except QueryFailed as error:
            return Verdict.fail(error.reason, error.detail, extracted=query, executed=0.0)

        got, want = ([canonical_row(row, self.float_digits) for row in result] for result in (rows, gold))
        ordered = orders_result(problem.answer)
        same = got == want if ordered else Counter(got) == Counter(want)
        if same:
            return Verdict(1.0, "correct", {"executed": 1.0}, extracted=query)
        detail = f"{len(got)} rows, expected {len(want)}" + (" in order" if ordered else "")
        return Verdict.fail("wrong result", detail, extracted=query, executed=1.0)

    def _gold_rows(self, path: Path, query: str) -> list[tuple]:
        """The gold result, cached: every response to a problem is compared with it. Failures are not cached,
        a timeout on a loaded machine may pass next time."""
        key = (path, query)
        if key not in self._gold:
            if len(self._gold) >= GOLD_CACHE_SIZE:
                self._gold.pop(next(iter(self._gold)))
            self._gold[key] = self._run(path, query)
        return self._gold[key]

    def _connect(self, path: Path) -> sqlite3.Connection:
        """A read-only connection, before the authorizer goes on (the setup itself runs PRAGMA)."""
        script = path.suffix == ".sql"
        conn = sqlite3.connect(":memory:" if script else f"{path.resolve().as_uri()}?mode=ro", uri=not script)
        try:
            if script:
                conn.executescript(read_script(path.resolve()))
            if hasattr(conn, "enable_load_extension"):  # absent when Python is built without extension support
                conn.enable_load_extension(False)
            if hasattr(conn, "setlimit"):  # Python >= 3.11
                conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, path: Path, query: str) -> list[tuple]:
        """Execute one read-only statement under the time and row limits; raises `QueryFailed`."""
        try:
            conn = self._connect(path)
        except (OSError, UnicodeDecodeError, sqlite3.Error) as error:
            raise QueryFailed("bad problem", f"cannot open {path}: {error}") from None
        blocked: list[str] = []
        deadline = time.monotonic() + self.time_limit_s
        timed_out = False

        def authorize(action: int, arg1: str | None, arg2: str | None, *_) -> int:
            denied_function = action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS
            if action in ALLOWED_ACTIONS and not denied_function:
                return sqlite3.SQLITE_OK
            blocked.append(f"action {action} ({arg1}, {arg2})")
            return sqlite3.SQLITE_DENY

        def over_time() -> bool:
            nonlocal timed_out
            timed_out = time.monotonic() > deadline
            return timed_out

        conn.set_authorizer(authorize)
        conn.set_progress_handler(over_time, PROGRESS_EVERY)
        try:
            rows = conn.execute(query).fetchmany(self.max_rows + 1)
        except (sqlite3.Error, sqlite3.Warning, ValueError) as error:  # Warning: several statements, Python < 3.12
            if timed_out:
                raise QueryFailed("timeout", f"over {self.time_limit_s} s") from None
            if blocked:
                raise QueryFailed("blocked", f"{error}: {blocked[0]}") from None
            raise QueryFailed("sql error", str(error)) from None
        finally:
            conn.close()
        if len(rows) > self.max_rows:
            raise QueryFailed("result too large", f"more than {self.max_rows} rows")
        return rows


def extract_query(response: str) -> str:
    """The last ```sql block, else the last fenced block, else the answer-marker line, else the whole text."""
    for candidate in (last_fenced_block(response, ("sql",)), last_fenced_block(response, None),
                      after_last_marker(response, ANSWER_MARKER)):
        if candidate is not None:
            return candidate.strip()
    return response.strip()
