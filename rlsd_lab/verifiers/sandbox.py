"""Run untrusted Python source in a throw-away process: a process-level sandbox, NOT a container.

Model-written code is hostile by assumption (infinite loops, fork bombs, deleting files, phoning home), so every
run stacks independent defences and a way around one still meets the others:

1. Temp dir. Each run gets a fresh `mkdtemp(prefix="rlsd_sandbox_")` as cwd, HOME and TMPDIR; it is removed
   afterwards, also after a timeout.
2. Process. A fresh interpreter (`-I -S -B -X utf8`: isolated, no site-packages, no bytecode writes, UTF-8 stdio)
   with an empty environment, in a session of its own. stdin/stdout/stderr are files in the temp dir, not pipes,
   so RLIMIT_FSIZE caps the output and a child that floods or never closes them cannot stall the parent.
3. Resource limits, set between fork and exec: CPU seconds, address space, file size, processes, open files, no
   core dumps. As root, the child also gets a network namespace of its own (only a down loopback; skipped where
   the kernel refuses) and drops to nobody (65534) before any user code runs: RLIMIT_NPROC does not apply to
   root, and as nobody the file permissions protect whatever nobody cannot write. The interpreter may live where
   nobody cannot reach (pyenv under /root is 0700), so the drop happens in the bootstrap: still root, it opens
   the import-path directories and points `sys.path` at `/proc/self/fd/N`, which keeps imports working.
4. Wall clock. Past the limit the whole process group is SIGKILLed; it is SIGKILLed after every run anyway, so
   background children die with their parent.
5. Audit hook (PEP 578), installed by the bootstrap before the user's code: refuses sockets, process creation
   (fork, exec, posix_spawn, subprocess), signals to other processes, ctypes, rlimit changes, gc object walks,
   symlinks and hard links, writes, deletes, renames, chmod and chdir outside the temp dir, and opening files
   outside the temp dir and the standard library (so a program cannot read a dataset's expected outputs from
   disk). A refusal writes `BLOCK_MARKER <event>` to stderr, so catching the PermissionError does not hide it.
   Audit hooks are a tripwire, not a security boundary (PEP 578 says so); layers 1-4 hold when it is bypassed.

Not covered: a process that leaves its process group (setsid after bypassing the hook) survives the group kill;
the temp dir can fill the disk with many capped files; concurrent sandboxes share the nobody uid, hence one
RLIMIT_NPROC budget, and only the hook keeps them from touching each other; `mkfifo`/`mknod` raise no audit
event. Without root there is no privilege drop and no network namespace, only limits and the hook.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

NOBODY = 65534
CLONE_NEWNET = 0x40000000
MAX_OPEN_FILES = 64
STDERR_TAIL_CHARS = 2000
TEMP_PREFIX = "rlsd_sandbox_"
BLOCK_MARKER = "rlsd-sandbox-blocked:"

# Runs as `python -c` in the temp dir: compile the user's file, drop privileges, install the hook, then exec the
# code as __main__. Everything lives inside _start, so the user's globals hold nothing that reaches the hook.
BOOTSTRAP = r'''
def _start():
    import builtins, os, sys

    marker, nobody = __MARKER__, __NOBODY__
    home = os.path.realpath(os.getcwd())
    with open("solution.py", "rb") as source:
        code = compile(source.read(), "solution.py", "exec")
    path_dirs = [os.path.realpath(entry) for entry in sys.path if os.path.isdir(entry)]
    if os.geteuid() == 0:
        seen_as = {entry: f"/proc/self/fd/{os.open(entry, os.O_RDONLY | os.O_DIRECTORY)}" for entry in path_dirs}

        def through_fd(path):
            real = os.path.realpath(path)
            for entry, fd_path in seen_as.items():
                if real == entry or real.startswith(entry + "/"):
                    return fd_path + real[len(entry):]
            return path

        sys.path[:] = seen_as.values()
        for module in list(sys.modules.values()):  # packages imported at startup (encodings) load more later
            if isinstance(getattr(module, "__path__", None), list):
                module.__path__[:] = map(through_fd, module.__path__)
        sys.path_importer_cache.clear()
        os.setgroups([])
        os.setgid(nobody)
        os.setuid(nobody)

    readable = (home, *path_dirs, "/dev/null", "/dev/urandom")
    writable = (home, "/dev/null")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    denied_events = frozenset({
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty", "os.kill",
        "os.killpg", "os.symlink", "os.link", "resource.setrlimit", "resource.prlimit", "gc.get_objects",
        "gc.get_referrers", "gc.get_referents", "sys.addaudithook",
    })
    denied_prefixes = ("socket.", "ctypes.", "syslog.")
    denied_imports = frozenset({"ctypes", "_ctypes", "_posixsubprocess"})  # fork_exec raises no audit event
    # event -> (index of a path argument, index of its dir_fd argument or None), for calls that change files
    path_events = {
        "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)),
        "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.truncate": ((0, None),),
        "os.setxattr": ((0, None),), "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),),
        "os.chdir": ((0, None),),
    }

    def resolve(path, dir_fd=None):
        if type(path) is int:
            return os.readlink(f"/proc/self/fd/{path}")
        pathlib = sys.modules.get("pathlib")
        if type(path) not in (str, bytes) and not (pathlib and type(path) in (pathlib.PosixPath,
                                                                              pathlib.PurePosixPath)):
            # a subclass or a user-defined __fspath__ could answer the hook and the call differently
            raise TypeError(f"{type(path).__name__} as a path")
        base = os.getcwd() if dir_fd in (None, -1) else os.readlink(f"/proc/self/fd/{dir_fd}")
        return os.path.realpath(os.path.join(base, os.fsdecode(path)))

    def within(path, roots):
        return any(path == root or path.startswith(root + "/") for root in roots)

    def steps_up(path):
        return type(path) is not int and ".." in os.fsdecode(os.fspath(path)).split("/")

    def may_open(path, flags):
        target = resolve(path)
        if flags & write_flags or os.path.isdir(target):
            # the open event carries no dir_fd, and ".." from another directory's fd could leave the temp dir
            return within(target, writable) and not steps_up(path)
        return within(target, readable)

    def allowed(event, args):
        if event == "open":
            return may_open(args[0], args[2])
        if event in path_events:
            return all(within(resolve(args[path], None if fd is None else args[fd]), writable)
                       for path, fd in path_events[event])
        if event == "import":
            return args[0] not in denied_imports
        return event not in denied_events and not event.startswith(denied_prefixes)

    def hook(event, args):
        try:
            ok = allowed(event, args)
        except Exception:
            ok = False
        if not ok:
            # only built-in types are shown: a user-defined __repr__ would run inside the hook
            what = f"{event} {args[0]!r}"[:200] if args and type(args[0]) in (str, bytes, int) else event
            try:
                os.write(2, f"\n{marker} {what}\n".encode(errors="replace"))
            except OSError:
                pass
            raise PermissionError(f"{marker} {what}")

    sys.addaudithook(hook)
    builtins.exit = builtins.quit = sys.exit  # -S skips site, which defines them
    del globals()["_start"]
    return code


exec(_start())
'''.replace("__MARKER__", repr(BLOCK_MARKER)).replace("__NOBODY__", str(NOBODY))

_UNSHARE = ctypes.CDLL(None, use_errno=True).unshare  # looked up here: the forked child must not load anything


@dataclass(frozen=True)
class Limits:
    """Per-run limits. CPU time is whole seconds (RLIMIT_CPU); memory is address space, not resident memory."""

    cpu_seconds: int = 2
    wall_seconds: float = 5.0
    memory_mb: int = 512
    output_bytes: int = 1_000_000
    max_processes: int = 64


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str  # the tail only
    timed_out: bool = False
    cpu_exceeded: bool = False
    memory_exceeded: bool = False
    output_exceeded: bool = False
    blocked: str = ""  # the audit event the sandbox refused and its first argument, if any

    @property
    def detail(self) -> str:
        """One line for a verdict: what was blocked, the killing signal or the last line of stderr."""
        if self.blocked:
            return f"blocked {self.blocked}"
        if self.timed_out:
            return "wall-clock limit"
        if self.returncode < 0:
            return f"killed by signal {-self.returncode} ({signal.strsignal(-self.returncode)})"
        lines = self.stderr.strip().splitlines()
        return f"exit {self.returncode}" + (f": {lines[-1][:200]}" if lines else "")


def run_python(source: str, stdin: str = "", limits: Limits = Limits()) -> RunResult:
    """Run `source` with `stdin` in a fresh sandbox. Raises only when the sandbox itself cannot start."""
    sandbox = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    try:
        return _run_in(sandbox, source, stdin, limits)
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def _run_in(sandbox: str, source: str, stdin: str, limits: Limits) -> RunResult:
    as_root = os.geteuid() == 0
    if as_root:
        os.chown(sandbox, NOBODY, NOBODY)  # nobody may create files here and nowhere it could not before
    for name, text in (("solution.py", source), ("stdin", stdin)):
        with open(os.path.join(sandbox, name), "wb") as file:
            file.write(text.encode("utf-8", errors="replace"))
    # stdout/stderr are read back through these handles, not by path: the child could swap the files for links
    with (open(os.path.join(sandbox, "stdin"), "rb") as stdin_file,
          open(os.path.join(sandbox, "stdout"), "w+b") as out,
          open(os.path.join(sandbox, "stderr"), "w+b") as err):
        # preexec_fn and threads: the function only makes system calls prepared here, and verifiers normally run
        # in single-threaded forkserver workers (rlsd_lab.verifiers.pool)
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", BOOTSTRAP],
            stdin=stdin_file, stdout=out, stderr=err, cwd=sandbox, env={"HOME": sandbox, "TMPDIR": sandbox},
            start_new_session=True,
            preexec_fn=_limit_child(_rlimits(limits), isolate_network=as_root),  # noqa: PLW1509
        )
        timed_out = False
        try:
            process.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(process.pid)
            process.wait()
        return _result(process.returncode, timed_out, out, err, limits)


def _rlimits(limits: Limits) -> list[tuple[int, tuple[int, int]]]:
    cpu, memory = math.ceil(limits.cpu_seconds), limits.memory_mb * 2**20
    return [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU at the soft limit, SIGKILL a second later
        (resource.RLIMIT_AS, (memory, memory)),
        (resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes)),
        (resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes)),
        (resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]


def _limit_child(rlimits: list[tuple[int, tuple[int, int]]], isolate_network: bool) -> Callable[[], None]:
    """The preexec function: runs in the forked child, so it only makes system calls prepared in the parent."""

    def limit() -> None:
        if isolate_network:
            _UNSHARE(CLONE_NEWNET)  # a refusal keeps the network; the audit hook still refuses sockets
        for which, value in rlimits:
            resource.setrlimit(which, value)

    return limit


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already gone


def _result(returncode: int, timed_out: bool, out: BinaryIO, err: BinaryIO, limits: Limits) -> RunResult:
    stdout, stdout_size = _read(out, limits.output_bytes)
    stderr, stderr_size = _read(err, limits.output_bytes)
    blocked = re.search(re.escape(BLOCK_MARKER) + r" (.+)", stderr)
    tail = stderr[-STDERR_TAIL_CHARS:]
    return RunResult(
        returncode, stdout, tail, timed_out,
        cpu_exceeded=returncode == -signal.SIGXCPU,
        memory_exceeded="MemoryError" in tail,
        output_exceeded=returncode == -signal.SIGXFSZ or max(stdout_size, stderr_size) >= limits.output_bytes,
        blocked=blocked.group(1) if blocked else "",
    )


def _read(file: BinaryIO, limit: int) -> tuple[str, int]:
    file.seek(0)
    return file.read(limit).decode("utf-8", errors="replace"), os.fstat(file.fileno()).st_size
