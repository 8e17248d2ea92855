import hashlib
import sqlite3
import time

import pytest

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers import build_verifier
from rlsd_lab.verifiers.extract import after_last_marker, last_fenced_block
from rlsd_lab.verifiers.sql import SQLVerifier, extract_query, orders_result

SCRIPT = """
CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL);
INSERT INTO t VALUES (1, 'ann', 1.5), (2, 'bob', 2.25), (3, 'cid', 0.1), (4, 'dee', 2.25);
CREATE TABLE n (x INTEGER);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) INSERT INTO n SELECT x FROM c;
"""
TIME_LIMIT_S = 0.5
MARGIN_S = 1.5  # the machine may be busy


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sql")
    (root / "shop.sql").write_text(SCRIPT)
    conn = sqlite3.connect(root / "shop.db")
    conn.executescript(SCRIPT)
    conn.close()
    return root


@pytest.fixture(params=["shop.db", "shop.sql"])
def db(request):
    return request.param


def problem(data_dir, db, gold="SELECT name FROM t WHERE score > 1", **extra):
    return Problem(uid="q", question="?", answer=gold, extra={"db": db, "data_dir": str(data_dir), **extra})


def score(response, problem, **options):
    return SQLVerifier(**{"time_limit_s": TIME_LIMIT_S, **options}).score(response, problem)


def test_registered_by_name():
    assert isinstance(build_verifier("sql", {"max_rows": 5}), SQLVerifier)


@pytest.mark.parametrize("response, reward, reason", [
    ("```sql\nSELECT name FROM t WHERE score > 1\n```", 1.0, "correct"),
    ("SELECT name FROM t WHERE score > 1 ORDER BY name DESC;", 1.0, "correct"),  # gold is unordered
    ("SELECT name FROM t WHERE score >= 2", 0.0, "wrong result"),
    ("SELECT name, id FROM t WHERE score > 1", 0.0, "wrong result"),  # extra column
    ("SELECT name FROM t WHERE score > 1 UNION ALL SELECT 'ann'", 0.0, "wrong result"),  # multisets, not sets
    ("SELECT nme FROM t", 0.0, "sql error"),
])
def test_execution_match(data_dir, db, response, reward, reason):
    verdict = score(response, problem(data_dir, db))
    assert (verdict.reward, verdict.reason) == (reward, reason)
    assert verdict.scores["executed"] == (reason != "sql error")


def test_column_order_is_compared_names_are_not(data_dir, db):
    gold = problem(data_dir, db, gold="SELECT id, name FROM t")
    assert score("SELECT id AS a, name AS b FROM t", gold).reason == "correct"
    assert score("SELECT name, id FROM t", gold).reason == "wrong result"


@pytest.mark.parametrize("response, reason", [
    ("SELECT name FROM t ORDER BY score DESC, id", "correct"),
    ("SELECT name FROM t ORDER BY score DESC, id DESC", "wrong result"),  # same rows, other order
    ("SELECT name FROM t", "wrong result"),
])
def test_ordered_gold_compares_lists(data_dir, db, response, reason):
    assert score(response, problem(data_dir, db, gold="SELECT name FROM t ORDER BY score DESC, id")).reason == reason


@pytest.mark.parametrize("query, ordered", [
    ("SELECT * FROM t ORDER BY x", True),
    ("select * from t order\n  by x limit 3", True),
    ("WITH c AS (SELECT * FROM t ORDER BY x) SELECT * FROM c", False),
    ("SELECT * FROM (SELECT * FROM t ORDER BY x LIMIT 2)", False),
    ("SELECT rank() OVER (ORDER BY score) FROM t", False),
    ("SELECT 'order by' FROM t", False),
    ('SELECT "order by" FROM t', False),
    ("SELECT 1 -- order by x", False),
    ("SELECT 1 /* ORDER BY x */", False),
    ("SELECT border FROM t", False),
])
def test_orders_result(query, ordered):
    assert orders_result(query) is ordered


@pytest.mark.parametrize("response, reason", [
    ("SELECT 0.333333333", "correct"),  # 6 significant digits
    ("SELECT 1.0 / 3 + 1e-12", "correct"),
    ("SELECT 0.3334", "wrong result"),
    ("SELECT '0.333333'", "wrong result"),  # text is not a number
])
def test_float_tolerance(data_dir, db, response, reason):
    assert score(response, problem(data_dir, db, gold="SELECT 1.0 / 3")).reason == reason


def test_integer_equals_float(data_dir, db):
    assert score("SELECT 2.0", problem(data_dir, db, gold="SELECT 2")).reason == "correct"


@pytest.mark.parametrize("extra, gold, detail", [
    ({}, "SELECT 1", "extra['db']"),
    ({"db": 3}, "SELECT 1", "extra['db']"),
    ({"db": "shop.db", "data_dir": None}, "SELECT 1", "no database"),  # "." is not the data directory
    ({"db": "missing.db"}, "SELECT 1", "no database"),
    ({"db": "missing.sql"}, "SELECT 1", "no database"),
    ({"db": "shop.db"}, "", "gold query"),
    ({"db": "shop.db"}, "SELECT nope FROM t", "no such column"),
    ({"db": "shop.sql"}, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
     "result too large"),
], ids=["no-db", "db-not-a-path", "no-data-dir", "missing-db-file", "missing-script", "no-gold", "broken-gold",
        "huge-gold"])
def test_bad_problem(data_dir, extra, gold, detail):
    verdict = score("SELECT 1", Problem(uid="q", question="?", answer=gold, extra={"data_dir": str(data_dir), **extra}))
    assert (verdict.reward, verdict.reason) == (0.0, "bad problem")
    assert detail in verdict.detail


def test_broken_script_is_a_bad_problem(tmp_path):
    (tmp_path / "broken.sql").write_text("CREATE TABLE (;")
    verdict = score("SELECT 1", problem(tmp_path, "broken.sql", gold="SELECT 1"))
    assert verdict.reason == "bad problem"


@pytest.mark.parametrize("response, query", [
    ("Q\n```python\nx\n```\n```SQL\nSELECT 1\n```\n```\nSELECT 2\n```", "SELECT 1"),  # sql tag wins
    ("```sql\nSELECT 1\n```\ntext\n```sql\nSELECT 2;\n```", "SELECT 2;"),  # the last one
    ("```\nSELECT 3\n```", "SELECT 3"),
    ("reasoning\nA: SELECT 4\nmore", "SELECT 4"),
    ("DATA: SELECT 5", "DATA: SELECT 5"),  # "A:" inside a word is not the marker
    ("  SELECT 6  ", "SELECT 6"),
    ("```sql\nSELECT 7", "```sql\nSELECT 7"),  # an unclosed fence is no block
])
def test_extract_query(response, query):
    assert extract_query(response) == query


def test_extract_helpers():
    assert last_fenced_block("```json\n{}\n```", ("sql",)) is None
    assert last_fenced_block("```Json extra\n{}\n```", ("json",)) == "{}"
    assert after_last_marker("no marker", "A:") is None


def file_state(directory):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


HOSTILE = {
    "recursive-cte": ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                      {"timeout"}),
    "long-recursive-cte": ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
                           {"result too large", "timeout"}),
    "drop-table": ("DROP TABLE t", {"blocked"}),
    "insert": ("INSERT INTO t VALUES (9, 'eve', 0)", {"blocked"}),
    "update": ("UPDATE t SET score = 0", {"blocked"}),
    "delete": ("DELETE FROM t", {"blocked"}),
    "create": ("CREATE TABLE u (x)", {"blocked"}),
    "attach": ("ATTACH DATABASE '{attach}' AS x", {"blocked"}),
    "vacuum-into": ("VACUUM INTO '{attach}'", {"blocked"}),
    "pragma": ("PRAGMA writable_schema=1", {"blocked"}),
    "pragma-read": ("PRAGMA table_info(t)", {"blocked"}),
    "transaction": ("BEGIN", {"blocked"}),
    "multiple-statements": ("SELECT 1; DROP TABLE t", {"sql error"}),
    "load-extension": ("SELECT load_extension('/tmp/nothing.so')", {"blocked"}),
    "cross-join-rows": ("SELECT * FROM n a, n b, n c", {"result too large", "timeout"}),
    "cross-join-count": ("SELECT count(*) FROM n a, n b, n c, n d", {"timeout", "result too large"}),
    "huge-blob": ("SELECT length(randomblob(1000000000))", {"sql error"}),
    "lone-surrogate": ("SELECT '\ud800'", {"malformed unicode"}),
    "nul-byte": ("SELECT 'a\x00b'", {"sql error"}),
    "empty": ("", {"no query"}),
    "empty-block": ("```sql\n\n```", {"no query"}),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_query(tmp_path, data_dir, db, case):
    query, reasons = HOSTILE[case]
    attach = tmp_path / "x.db"
    gold = problem(data_dir, db)
    verifier = SQLVerifier(time_limit_s=TIME_LIMIT_S)
    verifier.score("SELECT 1", gold)  # caches the gold result, so only the hostile query is timed
    before = file_state(data_dir)
    start = time.monotonic()
    verdict = verifier.score(query.format(attach=attach), gold)
    assert time.monotonic() - start < TIME_LIMIT_S + MARGIN_S
    assert verdict.reward == 0.0 and verdict.reason in reasons, verdict
    assert file_state(data_dir) == before  # the database is byte-identical and nothing was added next to it
    assert not attach.exists()
    assert score("SELECT name FROM t WHERE score > 1", gold).reason == "correct"  # the data is intact
