"""A/B: two code versions timed in one interleaved run (``sciml-bench ab``).

An *arm* is a Python interpreter (another venv, e.g. another torch release, running this checkout's
code) or a git revision of a source tree (checked out into a temporary worktree, put first on the
arm's import path). Every selected case gets a worker per arm, forked by that arm's fork server
(``sciml_bench.forkserver``: the arm's interpreter, started afresh for every pass); in the runner's
rounds a case's two arms take one turn, back to back in a random order, and the turns are shuffled
per round (RMIT; one case over four rounds: ``B N | N B | N B | B N``; with --duet both arms at
once), so both arms share each round's machine and a ratio new/base is paired by round. Nothing
here times or compares anything: the runner times (``runner.execute`` with ``arms``, each arm
handing in its process ``context``) and ``compare.compare_ab`` compares, with the same verdicts and
table as ``compare``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sciml_bench.errors import UsageError
from sciml_bench.forkserver import ServerContext

# Rounds per pass unless --rounds says otherwise (at least; a suite with more keeps its own). Measured on
# 2 cores (README, "How far to trust compare"): 4 rounds caught 42 % of real 10 % slowdowns, 12 caught them all.
MIN_ROUNDS = 12
MIN_PASSES = 2  # the arms' CI is the spread between passes (fresh processes): one pass has none


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

    def context(self, log_path: Path) -> ServerContext:
        """This arm's process context for one pass (``supervise.ProcessContext``): its fork server
        (``forkserver.ServerContext``: the arm's interpreter and environment) starts now."""
        return ServerContext(self.python, self.env(), log_path)

    def header(self) -> dict[str, Any]:
        return {"spec": self.spec, "python": self.python, "path": self.path, "revision": self.revision,
                "repo": self.repo, "torch": self.info.get("torch"), "python_version": self.info.get("python"),
                "environment": self.info.get("environment", {})}


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


PROBE_TIMEOUT = 300.0  # seconds for an arm's interpreter to import torch, sciml_bench and the plugins


@dataclass
class _Probe:
    """An arm's probe process (``_start_probe``), its output in files (two probes run at once: a pipe
    not read while the other is awaited could fill and stall it)."""

    arm: Arm
    flag: str
    proc: subprocess.Popen
    out: Any
    err: Any


def _start_probe(arm: Arm, flag: str, plugins: list[str], stack: ExitStack) -> _Probe:
    """Start checking that the arm's interpreter can import torch, the runner's worker and the plugins
    (``_finish_probe`` reads the answer). It dies with this process, and ``stack`` stops it."""
    import functools

    from sciml_bench.lifetime import die_with_parent

    code = ("import importlib, json, sys, torch\n"
            "from sciml_bench.measure.environment import collect\n"
            "import sciml_bench, sciml_bench.runner\n"
            f"files = [sciml_bench.__file__] + [importlib.import_module(m).__file__ for m in {plugins!r}]\n"
            "print(json.dumps({'torch': torch.__version__, 'python': sys.version.split()[0],"
            " 'environment': collect(), 'files': files}))\n")
    out, err = (stack.enter_context(tempfile.TemporaryFile()) for _ in range(2))  # noqa: SIM115  (closed by stack)
    try:
        proc = subprocess.Popen([arm.python, "-c", code], stdout=out, stderr=err, env=arm.env(),
                                stdin=subprocess.DEVNULL,  # no thread of ours runs now: preexec_fn is safe
                                preexec_fn=functools.partial(die_with_parent, os.getpid()))  # noqa: PLW1509
    except OSError as e:
        raise UsageError(f"{flag} {arm.spec}: cannot run {arm.python}: {e.strerror}") from None
    stack.callback(lambda: proc.poll() is None and (proc.kill(), proc.wait()))  # a Ctrl-C or the other arm's error
    return _Probe(arm, flag, proc, out, err)


def _finish_probe(probe: _Probe, deadline: float) -> None:
    """Wait for an arm's probe and fill ``arm.info``; UsageError when the arm cannot run.

    A revision arm must run code from its worktree (sciml_bench itself or a plugin): otherwise both
    arms would import the same installed copy and "unchanged" would be a fiction."""
    arm, flag = probe.arm, probe.flag
    try:
        probe.proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise UsageError(f"{flag} {arm.spec}: {arm.python} did not import torch and sciml_bench within "
                         f"{PROBE_TIMEOUT:.0f} s") from None
    probe.out.seek(0)
    probe.err.seek(0)
    stdout, stderr = (f.read().decode(errors="replace") for f in (probe.out, probe.err))
    if probe.proc.returncode != 0:
        last = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        if "No module named 'torch'" in stderr:
            raise UsageError(f"{flag} {arm.spec}: interpreter {arm.python} has no torch installed")
        raise UsageError(f"{flag} {arm.spec}: the arm cannot import sciml_bench's worker: {last[0][:300]}")
    arm.info = json.loads(stdout.strip().splitlines()[-1])
    if arm.revision:
        tree = Path(arm.path[0]).resolve()
        if not any(Path(f).resolve().is_relative_to(tree) for f in arm.info.pop("files")):
            raise UsageError(f"{flag} {arm.spec}: neither sciml_bench nor a --plugin module comes from its "
                             f"worktree (the arm would run the installed code, not revision {arm.spec}); name the "
                             f"plugin module that lives in {arm.repo} with --plugin")
    else:
        arm.info.pop("files")


def probe_arms(arms_: list[Arm], flags: list[str], plugins: list[str]) -> None:
    """Check that every arm's interpreter imports torch, sciml_bench's worker and the ``plugins``,
    all at once (~4 s each), and fill each ``arm.info``. UsageError for the first arm (in order) that
    cannot run, raised as soon as its probe ends: the others are stopped then, not awaited, and on a
    Ctrl-C too; none outlives this process."""
    with ExitStack() as probing:
        deadline = time.monotonic() + PROBE_TIMEOUT
        for probe in [_start_probe(arm, flag, plugins, probing) for arm, flag in zip(arms_, flags)]:
            _finish_probe(probe, deadline)


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
        probe_arms(out, flags, list(plugins))
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
