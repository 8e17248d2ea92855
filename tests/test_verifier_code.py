"""The code verifier and its sandbox: scoring, test-case layouts, and a suite of hostile programs.

Every hostile case must score 0 with its expected reason within the wall limit, leave no sandbox process and no
temp dir behind, and leave the host's files and network alone. As root, a second suite switches the audit hook
off to show that the OS layers (nobody, RLIMIT_NPROC, process-group kill, network namespace) hold on their own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlsd_lab.tasks.problem import Problem
from rlsd_lab.verifiers import sandbox
from rlsd_lab.verifiers.code import CodeVerifier, extract_code
from rlsd_lab.verifiers.sandbox import BLOCK_MARKER, NOBODY, TEMP_PREFIX, Limits, run_python

WALL = 2.0
MARGIN = 3.0  # interpreter start-up and clean-up on a loaded two-core machine
FAST = {"cpu_seconds": 1, "wall_seconds": WALL, "output_bytes": 100_000}
VERIFIER = CodeVerifier(**FAST)
ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
ADD_TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4", "output": "6"}]
AS_ROOT = os.geteuid() == 0


def problem(tests=None, answer: str = "") -> Problem:
    return Problem(uid="p", question="q", answer=answer, extra={} if tests is None else {"tests": tests})


def fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\nIt reads the input and prints the answer."


# --- scoring -------------------------------------------------------------------------------------------------


def test_correct_program_scores_one():
    verdict = VERIFIER.score(fenced(ADD), problem(ADD_TESTS))
    assert (verdict.reward, verdict.reason) == (1.0, "passed")
    assert verdict.scores == {"tests_passed": 2, "tests_total": 2}
    assert verdict.extracted == ADD.strip()


def test_half_the_tests_scores_half():
    code = "a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)"
    verdict = VERIFIER.score(code, problem(ADD_TESTS))
    assert (verdict.reward, verdict.reason) == (0.5, "partial")
    assert verdict.scores == {"tests_passed": 1, "tests_total": 2}
    assert "test 1: wrong output" in verdict.detail


def test_output_comparison_ignores_trailing_whitespace_only():
    tests = [{"input": "", "output": "1 2\n3"}]
    assert VERIFIER.score("print('1 2   ')\nprint('3\\t')\nprint()\nprint()", problem(tests)).reward == 1.0
    assert VERIFIER.score("print(' 1 2')\nprint('3')", problem(tests)).reason == "wrong output"
    assert VERIFIER.score("print('1  2')\nprint('3')", problem(tests)).reason == "wrong output"


def test_assert_tests():
    asserts = ["assert add(1, 2) == 3", "assert add(2, 2) == 5"]
    verdict = VERIFIER.score(fenced("def add(a, b):\n    return a + b"), problem(asserts))
    assert (verdict.reward, verdict.reason, verdict.scores["tests_passed"]) == (0.5, "partial", 1)


def test_runtime_and_syntax_errors():
    assert VERIFIER.score("raise ValueError('no')", problem(ADD_TESTS)).reason == "runtime error"
    verdict = VERIFIER.score("def broken(:\n    pass", problem(ADD_TESTS))
    assert (verdict.reason, verdict.reward) == ("runtime error", 0.0)
    assert "SyntaxError" in verdict.detail


def test_ordinary_stdlib_programs_run():
    """The sandbox must not break what honest solutions use: imports, namedtuple, temp dirs, open(0), exit()."""
    code = """
import bisect, collections, dataclasses, decimal, fractions, functools, heapq, itertools, json, math, random
import pathlib, re, statistics, string, sys, tempfile, threading, typing, unicodedata
Point = collections.namedtuple("Point", "x y")
numbers = list(map(int, open(0).read().split()))
with tempfile.TemporaryDirectory() as scratch:  # removed with dir_fd calls that the hook must resolve
    (pathlib.Path(scratch) / "notes.txt").write_text("x" * 1000)
print(sum(numbers), Point(1, 2).x, heapq.nsmallest(1, numbers)[0], fractions.Fraction(1, 3) * 3, "é".encode("cp1252"))
exit(0)
"""
    verdict = VERIFIER.score(fenced(code), problem([{"input": "3 1 2\n", "output": "6 1 1 1 b'\\xe9'"}]))
    assert (verdict.reward, verdict.reason) == (1.0, "passed"), verdict.detail


@pytest.mark.parametrize("response, code", [
    ("```python\nprint(1)\n```", "print(1)"),
    ("```py\nprint(1)\n```\n```text\n1\n```", "print(1)"),  # a python block beats a later output block
    ("```python\nprint(1)\n```\nbetter:\n```python\nprint(2)\n```", "print(2)"),  # the last python block
    ("```\nprint(3)\n```", "print(3)"),
    ("```cpp\nint main() {}\n```\n```\nprint(4)\n```", "print(4)"),
    ("1. Code:\n   ```python\n   x = 5\n   print(x)\n   ```", "x = 5\nprint(x)"),  # indented inside a list
    ("```python\nprint(6)\n# cut off at the token limit", "print(6)\n# cut off at the token limit"),
    ("print(7)", "print(7)"),
    ("```python\n\n```", ""),
])
def test_extract_code(response, code):
    assert extract_code(response) == code


@pytest.mark.parametrize("response", ["", "   \n", "```python\n\n```"])
def test_no_code(response):
    assert VERIFIER.score(response, problem(ADD_TESTS)).reason == "no code"


def test_verl_json_answer_layout():
    answer = json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})
    verdict = VERIFIER.score(ADD, problem(answer=answer))
    assert (verdict.reward, verdict.reason, verdict.scores["tests_total"]) == (1.0, "passed", 2)


@pytest.mark.parametrize("tests, answer", [
    (None, ""),
    (None, "not json"),
    (None, "[" * 100_000),
    (None, json.dumps([1, 2])),
    (None, json.dumps({"inputs": ["1"], "outputs": []})),
    (None, json.dumps({"inputs": [], "outputs": []})),
    (None, json.dumps({"inputs": ["1"], "outputs": ["1"], "fn_name": "f"})),
    ([], ""),
    ("assert True", ""),
    ([{"input": 1, "output": "1"}], ""),
    ([None], ""),
], ids=["missing", "not-json", "deep-json", "json-list", "unequal", "empty", "fn-name", "empty-list", "string",
        "int-input", "none-test"])
def test_missing_or_invalid_tests(tests, answer):
    verdict = VERIFIER.score(ADD, problem(tests, answer))
    assert (verdict.reward, verdict.reason) == (0.0, "no tests")


def test_options_are_keywords_with_defaults():
    assert CodeVerifier().limits == Limits(cpu_seconds=2, wall_seconds=5.0, memory_mb=512, output_bytes=1_000_000,
                                           max_processes=64)
    with pytest.raises(TypeError):
        CodeVerifier(2)
    with pytest.raises(ValueError, match="no room"):
        CodeVerifier(wall_seconds=5, total_wall_seconds=1)


def test_time_budget_bounds_a_slow_program():
    verifier = CodeVerifier(**FAST, total_wall_seconds=WALL + 0.5)
    start = time.monotonic()
    verdict = verifier.score("import time\ntime.sleep(0.3)\n" + ADD, problem(ADD_TESTS * 3))
    assert time.monotonic() - start < WALL + 0.5 + MARGIN
    assert verdict.scores["tests_passed"] < 6 and "time budget" in verdict.detail


# --- hostile programs ----------------------------------------------------------------------------------------


@dataclass
class Host:
    """What a hostile program aims at: files and a listening port it must not reach."""

    private: Path  # pytest's tmp_path: as root, out of nobody's reach, so the OS refuses too
    shared: Path  # a 0o777 dir: nobody may create, rename and delete there, only the audit hook refuses
    token: str
    port: int


@dataclass(frozen=True)
class Hostile:
    id: str
    source: str  # dedented, then formatted with the Host's fields
    reason: str
    tests: int = 1


HOSTILE = [
    Hostile("infinite loop", "while True:\n    pass", "timeout", tests=3),
    Hostile("sleep forever", "import time\ntime.sleep(3600)", "timeout", tests=3),
    Hostile("fork bomb os.fork", "import os\nwhile True:\n    os.fork()", "blocked"),
    Hostile("fork bomb subprocess", """
        import subprocess, sys
        while True:
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)  # {token}"])
        """, "blocked"),
    Hostile("fork bomb multiprocessing", """
        import multiprocessing, time
        while True:
            multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,)).start()
        """, "blocked"),
    Hostile("memory bomb", "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))", "memory limit"),
    Hostile("memory bomb touched", "chunks = []\nwhile True:\n    chunks.append(b'x' * 2**24)", "memory limit"),
    Hostile("huge output loop", "while True:\n    print('x' * 1000)", "output limit"),
    Hostile("huge output 100 MB", "import sys\nsys.stdout.write('x' * 100_000_000)", "output limit"),
    Hostile("huge stderr", "import sys\nwhile True:\n    sys.stderr.write('e' * 1000)", "output limit"),
    Hostile("write outside", """
        for path in ["{private}/pwned", "{shared}/pwned"]:
            try:
                open(path, "w").write("pwned")
            except OSError:
                pass
        print(3)
        """, "blocked"),
    Hostile("delete outside", """
        import os, shutil
        attacks = [lambda: os.remove("{private}/sentinel"), lambda: os.remove("{shared}/sentinel"),
                   lambda: shutil.rmtree("{private}/keep"), lambda: os.rename("{shared}/sentinel", "stolen"),
                   lambda: os.chmod("{shared}/sentinel", 0o777)]
        for attack in attacks:
            try:
                attack()
            except OSError:
                pass
        print(3)
        """, "blocked"),
    Hostile("chdir out", "import os\nos.chdir('{shared}')\nopen('pwned', 'w').write('pwned')", "blocked"),
    Hostile("symlink out", "import os\nos.symlink('{shared}', 'out')\nopen('out/pwned', 'w').write('pwned')",
            "blocked"),
    Hostile("dir fd out", """
        import os
        fd = os.open("{shared}", os.O_RDONLY)
        os.close(os.open("pwned", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        """, "blocked"),
    Hostile("read outside", f"print(open({__file__!r}).read())", "blocked"),
    Hostile("network", """
        import socket
        for attempt in range(2):
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"pwned")
            except OSError:
                pass
        print(3)
        """, "blocked"),
    Hostile("raw socket", "import _socket\n_socket.socket().connect(('127.0.0.1', {port}))", "blocked"),
    Hostile("ctypes", "import ctypes\nctypes.CDLL(None).system(b'touch {shared}/pwned')", "blocked"),
    Hostile("shell", """
        import os
        try:
            os.system("touch {shared}/pwned")
        except OSError:
            pass
        os.execv("/bin/sh", ["sh", "-c", "touch {shared}/pwned"])
        """, "blocked"),
    Hostile("kill parent", "import os\nos.kill(os.getppid(), 9)", "blocked"),
    Hostile("raise limits", "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (100, 100))", "blocked"),
    Hostile("hook tampering", "import gc\nprint(len(gc.get_objects()))", "blocked"),
    Hostile("fake path object", """
        class Path:
            def __fspath__(self):
                return "{shared}/pwned"
        open(Path(), "w")
        """, "blocked"),
    Hostile("empty output", "pass", "wrong output"),
    Hostile("exit early", "import sys\nsys.exit(0)", "wrong output"),
    Hostile("null bytes", "print(3)\x00", "runtime error"),
]


def sandbox_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(TEMP_PREFIX)}


def processes(match) -> set[int]:
    """Live processes whose (cmdline, uid) satisfy `match`; zombies have no cmdline and do not count."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
        except (OSError, IndexError):
            continue
        if cmdline and match(cmdline, uid):
            found.add(int(pid))
    return found


def leftovers(token: str, nobody_before: set[int]) -> set[int]:
    """Sandbox interpreters, processes carrying the token and new processes of nobody, after a short grace."""
    def left(cmdline, uid):
        return BLOCK_MARKER.encode() in cmdline or token.encode() in cmdline or uid == NOBODY
    deadline = time.monotonic() + 2.0
    while (found := processes(left) - nobody_before) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@pytest.fixture
def host(tmp_path):
    token = uuid.uuid4().hex
    shared = Path(tempfile.gettempdir()) / f"rlsd_test_{token}"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "sentinel").write_text("keep")
    mode = (shared / "sentinel").stat().st_mode
    (tmp_path / "sentinel").write_text("keep")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "file").write_text("keep")
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            yield Host(tmp_path, shared, token, listener.getsockname()[1])
            listener.settimeout(0.2)
            with pytest.raises(TimeoutError):
                listener.accept()  # nothing connected
        assert sorted(path.name for path in shared.iterdir()) == ["sentinel"]
        assert (shared / "sentinel").read_text() == "keep" and (shared / "sentinel").stat().st_mode == mode
        assert sorted(path.name for path in tmp_path.iterdir()) == ["keep", "sentinel"]
        assert (tmp_path / "sentinel").read_text() == "keep" and (tmp_path / "keep" / "file").read_text() == "keep"
    finally:
        shutil.rmtree(shared)


@pytest.mark.parametrize("case", HOSTILE, ids=[case.id for case in HOSTILE])
def test_hostile_program(case, host):
    dirs_before, nobody_before = sandbox_dirs(), processes(lambda _, uid: uid == NOBODY)
    tests = [{"input": "1 2\n", "output": "3\n"}] * case.tests
    start = time.monotonic()
    verdict = VERIFIER.score(fenced(textwrap.dedent(case.source).format(**vars(host))), problem(tests))
    elapsed = time.monotonic() - start
    assert (verdict.reward, verdict.reason) == (0.0, case.reason), verdict.detail
    assert elapsed < WALL + MARGIN
    if case.tests > 1:
        assert f"{case.tests - 1} tests after the timeout not run" in verdict.detail
    assert sandbox_dirs() <= dirs_before
    assert not leftovers(host.token, nobody_before)


def test_malformed_unicode():
    verdict = VERIFIER.score(fenced("print('\ud800')"), problem(ADD_TESTS))
    assert (verdict.reward, verdict.reason, verdict.extracted) == (0.0, "malformed unicode", None)


def test_catching_the_block_does_not_help():
    """The marker goes to stderr before the PermissionError, so a program that swallows it still scores 0."""
    code = "import os\ntry:\n    os.fork()\nexcept BaseException:\n    pass\nprint(3)"
    result = run_python(code, "", Limits(**FAST))
    assert result.returncode == 0 and result.stdout == "3\n" and result.blocked == "os.fork"
    assert VERIFIER.score(code, problem(ADD_TESTS[:1])).reason == "blocked"


# --- the OS layers alone, with the audit hook switched off ---------------------------------------------------


@pytest.fixture
def no_audit_hook(monkeypatch):
    if not AS_ROOT:
        pytest.skip("the privilege drop and the network namespace need root")
    install = "    sys.addaudithook(hook)\n"
    assert sandbox.BOOTSTRAP.count(install) == 1
    monkeypatch.setattr(sandbox, "BOOTSTRAP", sandbox.BOOTSTRAP.replace(install, ""))


def test_without_hook_runs_as_nobody(no_audit_hook):
    result = run_python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())", "", Limits(**FAST))
    assert result.stdout.split() == [str(NOBODY), str(NOBODY), "[]"]


def test_without_hook_fork_bomb_is_capped_and_killed(no_audit_hook):
    token = uuid.uuid4().hex
    code = textwrap.dedent(f"""
        import os, time
        forks = 0  # {token}
        for _ in range(200):
            try:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                forks += 1
            except OSError:
                break
        print(forks)
        """)
    nobody_before = processes(lambda _, uid: uid == NOBODY)
    result = run_python(code, "", Limits(**{**FAST, "max_processes": 8}))
    assert result.returncode == 0 and 0 < int(result.stdout) < 8  # RLIMIT_NPROC counts the parent too
    assert not leftovers(token, nobody_before)  # the sleeping children died with the process group


def test_without_hook_files_of_others_are_safe(no_audit_hook, tmp_path):
    (tmp_path / "sentinel").write_text("keep")
    code = textwrap.dedent(f"""
        import os
        for attack in [lambda: open("{tmp_path}/pwned", "w"), lambda: os.remove("{tmp_path}/sentinel")]:
            try:
                attack()
            except PermissionError:
                print("denied")
        """)
    result = run_python(code, "", Limits(**FAST))
    assert result.stdout.split() == ["denied", "denied"] and not result.blocked
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sentinel"]


def test_without_hook_there_is_no_network(no_audit_hook):
    interfaces = run_python("print(open('/proc/self/net/dev').read())", "", Limits(**FAST)).stdout
    if "eth" in interfaces or interfaces.count(":") > 1:
        pytest.skip("no network namespace here (unshare needs CAP_SYS_ADMIN)")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=1)"
        result = run_python(code, "", Limits(**FAST))
        assert result.returncode == 1 and "OSError" in result.stderr and not result.blocked
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
