"""A/B: two code versions timed in one interleaved run (``sciml-bench ab``).

An *arm* is a Python interpreter (another venv, e.g. another torch release, running this checkout's
code) or a git revision of a source tree (checked out into a temporary worktree, put first on the
arm's import path). Every selected case gets a worker per arm, forked by that arm's fork server
(``sciml_bench.arm_server``: the arm's interpreter, started afresh for every pass); in the runner's
rounds a case's two arms take one turn, back to back in a random order, and the turns are shuffled
per round (RMIT; one case over four rounds: ``B N | N B | N B | B N``; with --duet both arms at
once), so both arms share each round's machine and a ratio new/base is paired by round. Nothing
here times or compares anything: the runner times (``runner.execute`` with ``arms``, each arm
handing in its process ``context``) and ``compare.compare_ab`` compares, with the same verdicts and
table as ``compare``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sciml_bench.errors import UsageError
from sciml_bench.supervise import FORKSERVER_PRELOAD, START_TIMEOUT

# Rounds per pass unless --rounds says otherwise (at least; a suite with more keeps its own). Measured on
# 2 cores (README, "How far to trust compare"): 4 rounds caught 42 % of real 10 % slowdowns, 12 caught them all.
MIN_ROUNDS = 12
MIN_PASSES = 2  # the arms' CI is the spread between passes (fresh processes): one pass has none
# How an arm's interpreter runs this checkout's arm_server.py as a file (its imports are the arm's).
_SERVER_CODE = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


@dataclass
class Arm:
    """One side of an A/B run: the interpreter its workers run and what goes first on their import path."""

    name: str  # base | new
    spec: str  # as the user gave it: an interpreter path or a revision
    python: str
    path: list[str] = field(default_factory=list)  # PYTHONPATH entries, first
    revision: str | None = None  # full commit, for a revision arm
    repo: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # torch / python versions, environment fingerprint

    def env(self) -> dict[str, str]:
        """The arm's environment: its own code first on the import path, the current directory (a
        plugin of the user's may live there) last. PYTHONSAFEPATH keeps ``python -c`` / ``-m`` from
        putting the current directory first, in the arm's interpreter and in every process it starts
        (DDP ranks): ``ab`` run from a checkout's root would otherwise import that checkout's sciml_bench."""
        env = dict(os.environ, PYTHONSAFEPATH="1")
        env["PYTHONPATH"] = os.pathsep.join(self.path + [p for p in [env.get("PYTHONPATH", "")] if p] + [os.getcwd()])
        return env

    def describe(self) -> str:
        what = f"{self.spec} = {self.revision[:12]} of {self.repo}" if self.revision else f"interpreter {self.python}"
        return f"{what} (torch {self.info.get('torch', '?')}, Python {self.info.get('python', '?')})"

    def context(self, log_path: Path) -> ArmContext:
        """This arm's process context for one pass (``supervise.ProcessContext``): its fork server starts now."""
        return ArmContext(self, log_path)

    def header(self) -> dict[str, Any]:
        return {"spec": self.spec, "python": self.python, "path": self.path, "revision": self.revision,
                "repo": self.repo, "torch": self.info.get("torch"), "python_version": self.info.get("python"),
                "environment": self.info.get("environment", {})}


class _ArmServer:
    """Run side of one arm's fork server (``sciml_bench/arm_server.py``) for one pass."""

    def __init__(self, arm: Arm, log_path: Path):
        self.log_path = log_path
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(log_path, "ab") as log:  # its import errors land here
                self.popen = subprocess.Popen(
                    [arm.python, "-c", _SERVER_CODE, str(Path(__file__).with_name("arm_server.py")),
                     str(theirs.fileno()), json.dumps(FORKSERVER_PRELOAD)],
                    pass_fds=(theirs.fileno(),), env=arm.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        except BaseException:
            self.sock.close()
            raise
        finally:
            theirs.close()
        self.codes: dict[int, int] = {}  # exit codes of this server's workers, as it reports them
        self.ready = False
        self.down: str | None = None  # why the server cannot fork workers

    def _read(self, timeout: float | None) -> dict[str, Any] | None:
        """The server's next message (exit reports are filed as they come), None on timeout."""
        if self.down or not select.select([self.sock], [], [], timeout)[0]:
            return None
        data = self.sock.recv(65536)
        if not data:
            self.down = f"the arm's fork server exited with code {self.popen.wait()}"
            return None
        msg = json.loads(data)
        if "exit" in msg:
            self.codes[msg["exit"]] = msg["code"]
        return msg

    def spawn(self, fd: int, log_path: str, threads: int | None) -> int:
        """Fork a worker that runs the worker loop over the pipe end ``fd``; its pid. OSError when the
        server is not running (``down`` says why)."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready and not self.down:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"the arm's fork server did not import torch and sciml_bench within {START_TIMEOUT:.0f} s")
            elif (self._read(left) or {}).get("ready"):
                self.ready = True
        if not self.down:
            try:
                socket.send_fds(self.sock, [json.dumps({"log": log_path, "threads": threads}).encode()], [fd])
            except OSError as e:
                self._fail(f"the arm's fork server is gone ({e.strerror})")
        while not self.down:
            msg = self._read(START_TIMEOUT)
            if msg is None and not self.down:
                self._fail(f"the arm's fork server did not fork a worker within {START_TIMEOUT:.0f} s")
            elif msg and "pid" in msg:
                return msg["pid"]
        raise OSError(self.down)

    def _fail(self, reason: str) -> None:
        """Mark the server down and make sure it is: its workers then die with it (PR_SET_PDEATHSIG),
        which is what ``exitcode`` reports for them."""
        self.down = reason
        self.popen.kill()
        self.popen.wait()

    def exitcode(self, pid: int, timeout: float = 0.0) -> int | None:
        while pid not in self.codes and not self.down and self._read(timeout) is not None:
            timeout = 0.0
        if pid not in self.codes and self.down:
            # the server's death SIGKILLs its workers (PR_SET_PDEATHSIG); an exit it reported came first
            return -signal.SIGKILL
        return self.codes.get(pid)

    def close(self) -> None:
        self.sock.close()  # EOF: the server exits
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class _ArmProcess:
    """A worker forked by an arm's server, with the ``multiprocessing.Process`` surface that
    ``supervise.Worker`` uses (start, pid, exitcode, is_alive, kill, join)."""

    def __init__(self, server: _ArmServer, conn, log_path: str, threads: int | None):
        self.server, self.conn, self.log_path, self.threads = server, conn, log_path, threads
        self.pid: int | None = None
        self.failed: int | None = None  # exit code when no worker could be forked

    def start(self) -> None:
        try:
            self.pid = self.server.spawn(self.conn.fileno(), self.log_path, self.threads)
        except OSError as e:  # the case's log carries the reason and the server's last output
            self.failed = self.server.popen.poll() or 1
            tail = Path(self.server.log_path).read_bytes()[-4096:] if Path(self.server.log_path).exists() else b""
            with open(self.log_path, "ab") as log:
                log.write(tail + f"\n{e}\n".encode())

    @property
    def exitcode(self) -> int | None:  # like multiprocessing: -N for a death by signal N
        return self.failed if self.pid is None else self.server.exitcode(self.pid)

    def is_alive(self) -> bool:
        return self.pid is not None and self.exitcode is None

    def kill(self) -> None:
        if self.is_alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def join(self, timeout: float | None = None) -> None:
        if self.pid is None:
            return
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.exitcode is None and (left := deadline - time.monotonic()) > 0:
            self.server.exitcode(self.pid, min(left, 0.5))


class ArmContext:
    """A ``supervise.ProcessContext`` (``Pipe``, ``Process``) for one arm
    and one pass: its fork server starts now, so both arms' servers import torch side by side."""

    def __init__(self, arm: Arm, log_path: Path):
        from sciml_bench.lifetime import mark_run

        mark_run()  # the server dies with this process (PR_SET_PDEATHSIG), its workers with it
        self.arm = arm
        self.server = _ArmServer(arm, log_path)

    @staticmethod
    def Pipe():  # noqa: N802  (the multiprocessing name)
        return mp.Pipe()

    def Process(self, target, args, daemon=True):  # noqa: N802, ARG002  (target: always the worker loop)
        conn, log_path, threads = args
        return _ArmProcess(self.server, conn, log_path, threads)

    def close(self) -> None:
        self.server.close()


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def _probe(arm: Arm, flag: str, plugins: list[str]) -> None:
    """Check the arm's interpreter can import torch, the runner's worker and the plugins; fill ``arm.info``.

    A revision arm must run code from its worktree (sciml_bench itself or a plugin): otherwise both
    arms would import the same installed copy and "unchanged" would be a fiction."""
    code = ("import importlib, json, sys, torch\n"
            "from sciml_bench.measure.environment import collect\n"
            "import sciml_bench, sciml_bench.runner\n"
            f"files = [sciml_bench.__file__] + [importlib.import_module(m).__file__ for m in {plugins!r}]\n"
            "print(json.dumps({'torch': torch.__version__, 'python': sys.version.split()[0],"
            " 'environment': collect(), 'files': files}))\n")
    try:
        p = subprocess.run([arm.python, "-c", code], capture_output=True, text=True, env=arm.env(), timeout=300)
    except OSError as e:
        raise UsageError(f"{flag} {arm.spec}: cannot run {arm.python}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{flag} {arm.spec}: {arm.python} did not import torch and sciml_bench within 300 s") \
            from None
    if p.returncode != 0:
        last = [ln for ln in p.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        if "No module named 'torch'" in p.stderr:
            raise UsageError(f"{flag} {arm.spec}: interpreter {arm.python} has no torch installed")
        raise UsageError(f"{flag} {arm.spec}: the arm cannot import sciml_bench's worker: {last[0][:300]}")
    arm.info = json.loads(p.stdout.strip().splitlines()[-1])
    if arm.revision:
        tree = Path(arm.path[0]).resolve()
        if not any(Path(f).resolve().is_relative_to(tree) for f in arm.info.pop("files")):
            raise UsageError(f"{flag} {arm.spec}: neither sciml_bench nor a --plugin module comes from its "
                             f"worktree (the arm would run the installed code, not revision {arm.spec}); name the "
                             f"plugin module that lives in {arm.repo} with --plugin")
    else:
        arm.info.pop("files")


def source_root() -> str:
    """The directory holding this checkout's ``sciml_bench`` package: an interpreter arm runs this code."""
    return str(Path(__file__).resolve().parent.parent)


@contextmanager
def arms(base: str, new: str, repo: str | os.PathLike | None = None, plugins: list[str] = ()):
    """Resolve the two ARM strings into ``Arm``s (worktrees checked out for revisions), yield them,
    then remove the worktrees. UsageError, before anything is written, for an ARM that is neither an
    executable interpreter nor a revision of ``repo``, a missing or dirty repository, an interpreter
    without torch, or a revision whose worktree holds none of the code the arm would run."""
    with ExitStack() as stack:
        flags = ("--base", "--new")
        out = [_resolve(name, spec, flag, repo, stack) for name, spec, flag in zip(("base", "new"), (base, new), flags)]
        with ThreadPoolExecutor(2) as pool:  # both interpreters import torch at once (~4 s each)
            probes = [pool.submit(_probe, arm, flag, list(plugins)) for arm, flag in zip(out, flags)]
        for probe in probes:  # the base's error first
            probe.result()
        # The run validates the selected cases here, in this process, against the zoo: a plugin that
        # exists only in the revisions' trees must be importable here too (the new arm's, else the base's).
        tree = next((a.path[0] for a in (out[1], out[0]) if a.revision), None)
        if tree:
            sys.path.insert(0, tree)
            stack.callback(lambda: tree in sys.path and sys.path.remove(tree))
        yield out


def _resolve(name: str, spec: str, flag: str, repo: str | os.PathLike | None, stack: ExitStack) -> Arm:
    candidate = Path(spec).expanduser()
    # a path: an existing file, or written as one; "origin/main" or "HEAD~1" are revisions
    if candidate.exists() or spec.startswith(("/", "./", "../", "~")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return Arm(name, spec, str(candidate.absolute()), [source_root()])
        raise UsageError(f"{flag} {spec}: not an executable Python interpreter (an ARM is an interpreter path "
                         f"or a git revision of --repo)")
    root = Path(repo) if repo is not None else Path.cwd()
    if shutil.which("git") is None:
        raise UsageError(f"{flag} {spec}: git is not installed, so a revision cannot be checked out")
    top = _git(root, "rev-parse", "--show-toplevel")
    if not root.is_dir() or top.returncode != 0:
        raise UsageError(f"--repo {root}: not a git repository (needed to check out revision {spec!r} of {flag})")
    root = Path(top.stdout.strip())
    commit = _git(root, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if commit.returncode != 0:
        raise UsageError(f"{flag} {spec}: neither an executable Python interpreter nor a revision of {root}")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if dirty:
        raise UsageError(f"--repo {root} has uncommitted changes ({len(dirty.splitlines())} file(s)); a revision "
                         f"arm would not include them: commit or stash them first")
    sha = commit.stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix=f"sciml-bench-ab-{name}-"))
    shutil.rmtree(tree)  # git worktree add wants to create it
    add = _git(root, "worktree", "add", "--detach", "--quiet", str(tree), sha)
    if add.returncode != 0:
        raise UsageError(f"{flag} {spec}: git worktree add failed: {add.stderr.strip()[:300]}")
    stack.callback(lambda: (_git(root, "worktree", "remove", "--force", str(tree)),
                            shutil.rmtree(tree, ignore_errors=True)))
    # this checkout's code after the worktree's: a plugin repository's revision changes only the plugin
    return Arm(name, spec, sys.executable, [str(tree), source_root()], revision=sha, repo=str(root))
