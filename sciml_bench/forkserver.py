"""Fork servers, the run's side: a process that imports torch once and forks a worker per case.

A server (``sciml_bench/arm_server.py``, run by a given interpreter with a given environment) serves
one pass and exits: a plain run starts one per pass index (``supervise.pass_context``), an A/B run
one per arm and pass (``ab.Arm.context``). One server per pass on purpose: a fresh process re-draws
per-process effects (library addresses, heap layout), and the pass-to-pass spread that the CIs
are built from (``stats.pass_ratio``) only sees an effect that differs between passes; a single
server for the whole run would give every worker its layout, a run-level effect no CI can see.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

# What a fork server imports before forking workers (a plain run's, and each A/B arm's).
FORKSERVER_PRELOAD = ["sciml_bench.lifetime", "torch", "torch._dynamo", "sciml_bench.worker", "sciml_bench.workloads",
                      "sciml_bench.measure.probes"]
SERVER_TIMEOUT = 180.0  # seconds for a fork server to import torch and sciml_bench, and for each fork
# How the server's interpreter runs this checkout's arm_server.py as a file (its imports resolve on the server's path).
_SERVER_CODE = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


class ForkServer:
    """The run's handle on one fork server (``sciml_bench/arm_server.py``) for one pass."""

    def __init__(self, python: str, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(log_path, "ab") as log:  # its import errors land here
                self.popen = subprocess.Popen(
                    [python, "-c", _SERVER_CODE, str(Path(__file__).with_name("arm_server.py")),
                     str(theirs.fileno()), json.dumps(FORKSERVER_PRELOAD)],
                    pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
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
            self.down = f"the fork server exited with code {self.popen.wait()}"
            return None
        msg = json.loads(data)
        if "exit" in msg:
            self.codes[msg["exit"]] = msg["code"]
        return msg

    def spawn(self, fd: int, log_path: str, threads: int | None) -> int:
        """Fork a worker that runs the worker loop over the pipe end ``fd``; its pid. OSError when the
        server is not running (``down`` says why)."""
        deadline = time.monotonic() + SERVER_TIMEOUT
        while not self.ready and not self.down:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"the fork server did not import torch and sciml_bench within {SERVER_TIMEOUT:.0f} s")
            elif (self._read(left) or {}).get("ready"):
                self.ready = True
        if not self.down:
            try:
                socket.send_fds(self.sock, [json.dumps({"log": log_path, "threads": threads}).encode()], [fd])
            except OSError as e:
                self._fail(f"the fork server is gone ({e.strerror})")
        while not self.down:
            msg = self._read(SERVER_TIMEOUT)
            if msg is None and not self.down:
                self._fail(f"the fork server did not fork a worker within {SERVER_TIMEOUT:.0f} s")
            elif msg and "pid" in msg:
                return msg["pid"]
        raise OSError(self.down)

    def kill(self, pid: int) -> None:
        """SIGKILL worker ``pid``, by the server: only it knows whether the pid is still its unreaped
        child, so a pid recycled to another process is never signalled (the run's own ``os.kill``
        would race with the server's reaping). A server that is gone took its workers with it."""
        if not self.down:
            try:
                self.sock.send(json.dumps({"kill": pid}).encode())
            except OSError:
                pass

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


class ForkedProcess:
    """A worker forked by a fork server, with the ``multiprocessing.Process`` surface that
    ``supervise.Worker`` uses (start, pid, exitcode, is_alive, kill, join)."""

    def __init__(self, server: ForkServer, conn, log_path: str, threads: int | None):
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

    @property
    def server_down(self) -> str | None:
        """Why this worker's fork server stopped, if it did (its death took the worker with it)."""
        return self.server.down

    def kill(self) -> None:
        if self.is_alive():
            self.server.kill(self.pid)

    def join(self, timeout: float | None = None) -> None:
        if self.pid is None:
            return
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.exitcode is None and (left := deadline - time.monotonic()) > 0:
            self.server.exitcode(self.pid, min(left, 0.5))


class ServerContext:
    """A ``supervise.ProcessContext`` (``Pipe``, ``Process``, ``close``) for one pass: its fork server
    starts now (``python`` with ``env``, output to ``log_path``), so servers started one after the
    other (A/B's two arms) import torch side by side."""

    def __init__(self, python: str, env: dict[str, str], log_path: Path):
        from sciml_bench.lifetime import RUN_PID_ENV, mark_run

        mark_run()  # the server dies with this process (PR_SET_PDEATHSIG), its workers with it
        self.server = ForkServer(python, dict(env, **{RUN_PID_ENV: os.environ[RUN_PID_ENV]}), log_path)

    @staticmethod
    def Pipe():  # noqa: N802  (the multiprocessing name)
        return mp.Pipe()

    def Process(self, target, args, daemon=True):  # noqa: N802, ARG002  (target: always the worker loop)
        conn, log_path, threads = args
        return ForkedProcess(self.server, conn, log_path, threads)

    def alive(self) -> bool:
        """Whether the server can still fork workers: not marked down, its process running."""
        return self.server.down is None and self.server.popen.poll() is None

    def close(self) -> None:
        self.server.close()
