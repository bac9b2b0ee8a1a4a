"""Supervision: the parent's side of the worker processes.

A ``Worker`` is one case's process (``sciml_bench.worker.main``) with its time budget: commands go
out, replies come back, and a worker that dies, hangs or is killed becomes a status and a reason
(``crashed``, ``oom`` with the kernel's evidence from ``oomkill``, ``timeout``) with the last lines of its
log; so does a DataLoader worker of it that is killed (``oom`` only with that evidence). Its log
is kept under ``LOG_LIMIT``. Workers come from a ``ProcessContext``: a fork server started afresh
for each pass (``pass_context``; an A/B arm's: ``ab.Arm.context``), which forks them with torch
already imported (``sciml_bench.forkserver``). ``pin_duet`` pins a case's two A/B arms to disjoint
cores (``--duet``).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from sciml_bench import oomkill
from sciml_bench.cases import Case
from sciml_bench.cpus import allowed_cpus
from sciml_bench.errors import LOADER_DIED, UsageError
from sciml_bench.forkserver import ServerContext
from sciml_bench.worker import RunOptions, main

START_TIMEOUT = 180.0  # seconds for a worker to import torch and report ready


class ProcessContext(Protocol):
    """Where workers come from: what ``Worker`` asks of a ``multiprocessing`` context, whether it can
    still start them (``alive``), and ``close`` when the pass is done with it
    (``forkserver.ServerContext``, ``SpawnContext``)."""

    def Pipe(self) -> tuple[Any, Any]: ...  # noqa: N802  (the multiprocessing names)

    def Process(self, target, args, daemon=True) -> Any: ...  # noqa: N802  (start, pid, exitcode, is_alive, kill, join)

    def alive(self) -> bool: ...

    def close(self) -> None: ...


LOG_LIMIT = 2 * 2 ** 20  # bytes of a case log kept: its first and last half, so a chatty case cannot fill a disk
POLL_SLICE = 0.5  # seconds between the parent's looks at a busy worker (log size, RSS)
# Lines that are never the reason a worker died: torch's import-time chatter and warning boilerplate.
LOG_NOISE = ("CUDA_HOME", "USDT:", "warnings.warn(", "Warning: ", "warn(", "gpuGetDeviceCount failed",
             "allocated before the profiling started")
_FRAME = re.compile(r'File "(.+)", line (\d+) in (\S+)')  # a faulthandler stack frame


class Worker:
    """Parent-side handle of one case's worker process, with its remaining time budget."""

    def __init__(self, ctx: ProcessContext, case: Case, log_path: Path, opts: RunOptions):
        self.case, self.log_path, self.budget = case, log_path, opts.timeout
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=main, args=(child, str(log_path), opts.threads), daemon=True)
        self.oom_mark = oomkill.mark()  # the cgroup's OOM-kill count before this worker could be killed
        self.rss = 0  # largest resident set seen, for OOM evidence
        self.proc.start()
        child.close()
        self.failure: tuple[str, str] | None = None

    def call(self, msg: tuple | None, timeout: float, charge: bool = True,
             limit: str = "of starting") -> tuple[str, Any]:
        """Send ``msg`` (None: just wait) and return the reply, or a failure (status, reason).

        Time spent waiting comes off the case's budget when ``charge`` (not for start-up); otherwise
        ``limit`` says in the timeout's reason which limit ran out. While waiting, the log is kept
        under LOG_LIMIT and the worker's RSS is sampled."""
        t0 = time.perf_counter()
        reply = None
        try:
            if msg is not None:
                self.conn.send(msg)
            while (left := timeout - (time.perf_counter() - t0)) > 0:
                if self.conn.poll(min(left, POLL_SLICE)):
                    reply = self._loader_verdict(self.conn.recv())
                    break
                self._watch()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            reply = self._crash_reason()
        finally:
            if charge:
                self.budget -= time.perf_counter() - t0
            cap_log(self.log_path)
        if reply is None:
            self.kill()
            reply = ("timeout", f"no answer within {timeout:.0f} s "
                     + ("(the rest of its --timeout)" if charge else limit) + self.log_tail())
        return reply

    def _loader_verdict(self, reply: tuple[str, Any]) -> tuple[str, Any]:
        """A reply of the worker's own: a DataLoader worker of this case killed by SIGKILL, or found dead
        without a word how, is ``oom`` where the kernel shows the OOM killer's hand since this worker started;
        else its reason says that no sign was found. Any other reply is returned as it came."""
        m = LOADER_DIED.search(reply[1]) if reply[0] == "crashed" and isinstance(reply[1], str) else None
        if m is None or m["how"] not in ("exited unexpectedly", "is killed by signal: Killed"):
            return reply
        evidence = oomkill.evidence(int(m["pids"].split(",")[0]), self.oom_mark)
        if evidence:
            return "oom", f"{reply[1]} (out of memory: {evidence})"
        return "crashed", f"{reply[1].rstrip(' .')}; {oomkill.no_sign()}"

    def post(self, msg: tuple) -> None:
        """Send ``msg`` without waiting; the next ``call(None, ...)`` collects the reply (or the crash)."""
        try:
            self.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _watch(self) -> None:
        cap_log(self.log_path)
        try:
            import psutil

            self.rss = max(self.rss, psutil.Process(self.proc.pid).memory_info().rss)
        except Exception:  # noqa: BLE001  (the worker may be gone; that shows up on the pipe)
            pass

    def _crash_reason(self) -> tuple[str, str]:
        self.proc.join(5)
        code = self.proc.exitcode
        tail = self.log_tail()
        server = getattr(self.proc, "server_down", None)  # a fork server's worker dies with its server
        if server:
            return "crashed", f"worker lost with its fork server: {server}{tail}"
        if code is not None and code < 0:
            sig = signal.Signals(-code).name
            if sig == "SIGKILL":
                evidence = oomkill.evidence(self.proc.pid, self.oom_mark, self.rss)
                if evidence:
                    return "oom", f"worker killed by SIGKILL: out of memory ({evidence}){tail}"
                return "crashed", f"killed (SIGKILL), {oomkill.no_sign(rss=True)}{tail}"
            return "crashed", f"worker died from {sig}{tail}"
        return "crashed", f"worker exited with code {code}{tail}"

    def log_tail(self, n: int = 400) -> str:
        """'; last output: ...': the traceback's last lines or the last real lines, noise left out."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 64 * 1024))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not any(s in ln for s in LOG_NOISE)]
        fatal = max((i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")), default=None)
        if fatal is not None:  # faulthandler: its headline and the innermost frames, not its module list
            frames = [m.groups() for ln in lines[fatal + 1:] if (m := _FRAME.match(ln))][:3]
            last = [lines[fatal]] + [" < ".join(f"{fn} ({Path(f).name}:{no})" for f, no, fn in frames)]
        else:
            last = lines[-3:]
        return f"; last output: {' | '.join(ln for ln in last if ln)[-n:]}" if last else ""

    def kill(self) -> None:
        cap_log(self.log_path)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(10)
        self.kill()
        self.conn.close()


def cap_log(path: Path, limit: int = LOG_LIMIT) -> None:
    """Keep a log under ``limit`` bytes: its first and last halves around a marker.

    The worker appends (O_APPEND), so it keeps writing at the new end."""
    try:
        size = path.stat().st_size
        if size <= limit:
            return
        with open(path, "r+b") as fh:
            fh.seek(size - limit // 2)
            tail = fh.read()
            fh.seek(limit // 2)
            fh.write(f"\n[... sciml-bench dropped {size - limit} bytes of output here ...]\n".encode() + tail)
            fh.truncate()
    except OSError:
        pass


class SpawnContext:
    """Workers as fresh interpreters (``multiprocessing``'s spawn), where fork servers do not exist."""

    def __init__(self):
        self._ctx = mp.get_context("spawn")

    def Pipe(self) -> tuple[Any, Any]:  # noqa: N802  (the multiprocessing names)
        return self._ctx.Pipe()

    def Process(self, target, args, daemon=True) -> Any:  # noqa: N802
        return self._ctx.Process(target=target, args=args, daemon=daemon)

    @staticmethod
    def alive() -> bool:
        """Always: there is no server to lose."""
        return True

    def close(self) -> None:
        """Nothing to stop: every worker was its own interpreter."""


def _fork_servers() -> bool:
    """Whether this platform can run a fork server: ``fork``, and Unix socket pairs of
    ``SOCK_SEQPACKET`` that carry file descriptors, made for real (a kernel may define the name
    and still refuse the pair)."""
    if not all(hasattr(m, name) for m, name in ((os, "fork"), (socket, "SOCK_SEQPACKET"), (socket, "send_fds"))):
        return False
    try:
        ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return False
    for end in ends:
        end.close()
    return True


def pass_context(log_path: Path) -> ProcessContext:
    """Where the workers of one pass come from: a fork server that imports torch once (a worker
    then starts in a fraction of a second instead of ~3 s), started now, for this pass only (its
    output goes to ``log_path``); the caller closes it when the pass is done. A fresh server per
    pass re-draws per-process effects (library addresses, heap layout) between passes, where the
    CIs see them (``sciml_bench.forkserver``). The server runs this interpreter on this process's
    import path, so it imports the same sciml_bench and plugins. Spawn where the platform has no
    fork server (no ``fork``, ``SOCK_SEQPACKET`` or ``send_fds``). Plain fork is unsafe once the
    parent has initialised CUDA or thread pools; the server never does."""
    from sciml_bench.lifetime import mark_run

    mark_run()  # the fork server and the workers die with this process
    if not _fork_servers():
        return SpawnContext()
    # '' in sys.path is the current directory; PYTHONSAFEPATH keeps the server's own start (-c) from adding it
    path = [p or os.getcwd() for p in sys.path]
    env = dict(os.environ, PYTHONSAFEPATH="1", PYTHONPATH=os.pathsep.join(path))
    return ServerContext(sys.executable, env, log_path)


def duet_cores() -> tuple[set[int], set[int]]:
    """The two disjoint halves of this process's cores that ``--duet`` pins the arms to; UsageError
    where there are not two cores or the platform cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        raise UsageError("--duet pins the arms to disjoint cores, which this platform cannot do "
                         "(no sched_setaffinity); run ab without --duet")
    cpus = allowed_cpus() or []
    half = len(cpus) // 2
    if half < 1:
        raise UsageError(f"--duet needs at least 2 cores to give each arm its own, this process may use {len(cpus)}")
    return set(cpus[:half]), set(cpus[half:2 * half])


def pin_duet(units: list[list[int]], workers: list[Any], index: int) -> dict[int, list[int]]:
    """Pin each case's base and new workers (``units``: their slots) to the two core halves. Which arm
    gets which half alternates by case and pass: a half that also serves interrupts or the run's own
    process must not favour one arm throughout, and the pass-to-pass spread then shows the difference.
    Returns {slot: its cores}, for the record."""
    halves, out = duet_cores(), {}
    for u, members in enumerate(units):
        for k, i in enumerate(members):
            if workers[i].failure is None:
                pid, half = workers[i].proc.pid, halves[(k + u + index) % 2]
                try:  # every thread: sched_setaffinity(pid) alone pins only the main one (a thread pool may exist)
                    for tid in [int(t) for t in os.listdir(f"/proc/{pid}/task")] if os.path.isdir("/proc") else [pid]:
                        os.sched_setaffinity(tid, half)
                    out[i] = sorted(half)
                except OSError:  # gone already: its next call reports why
                    pass
    return out
