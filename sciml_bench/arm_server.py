"""A fork server: imports torch and sciml_bench's worker once, then forks a worker per case.

It serves one pass of a plain run (``supervise.pass_context``) or of one A/B arm (``ab.Arm.context``);
``sciml_bench.forkserver`` starts it with an interpreter and import path, *as a file*, so this file
is this checkout's while every ``sciml_bench`` import resolves to the arm's code. It therefore uses
only the standard library and the worker loop every arm has (``sciml_bench.worker.main``; in arms
older than that module, ``sciml_bench.runner._worker_main``).
Without it, each case's worker was a fresh interpreter importing torch (~3 s of CPU on 2 cores,
the bulk of an A/B run); now that costs one interpreter per pass (per arm and pass in A/B). One
server per pass on purpose: a fresh process re-draws per-process effects (library addresses, heap
layout), which the pass-to-pass spread of the CIs must go on seeing.

Protocol over the Unix socket given as argv[1] (SOCK_SEQPACKET, one JSON object a packet):
``{"log": path, "threads": n}`` with the worker's pipe end attached (SCM_RIGHTS); the server answers
``{"pid": pid}`` and, whenever a worker ends, ``{"exit": pid, "code": c}`` (``-N``: killed by signal N,
as ``subprocess`` reports it). ``{"kill": pid}``: SIGKILL that worker if it has not been reaped yet (the
server is the only process that knows, so a pid the kernel gave to another process since is never
signalled). EOF on the socket: the run is done with this pass; exit.
"""
import importlib
import json
import os
import select
import signal
import socket
import sys


def _fork_worker(server: socket.socket, msg: dict, fd: int, own: tuple[int, ...]) -> int:
    pid = os.fork()
    if pid:
        os.close(fd)
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        server.close()
        for f in own:
            os.close(f)
        from multiprocessing.connection import Connection

        try:
            from sciml_bench.worker import main
        except ImportError:  # an arm older than the worker module: the same loop and messages
            from sciml_bench.runner import _worker_main as main

        main(Connection(fd), msg["log"], msg.get("threads") or None)
        code = 0
    except BaseException:  # noqa: BLE001  (into the case log: the worker may have failed before opening it)
        import traceback

        traceback.print_exc()
        try:
            with open(msg["log"], "a") as log:
                traceback.print_exc(file=log)
        except OSError:
            pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(server: socket.socket, live: set[int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        live.discard(pid)
        server.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def serve(fd: int, preload: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run decides how Ctrl-C ends it, even while importing
    server = socket.socket(fileno=fd)
    try:
        from sciml_bench.lifetime import die_with_parent

        die_with_parent()  # the run's death ends this server, whose death ends its workers
    except ImportError:  # an arm older than the lifetime module
        pass
    for name in preload:  # the run's list (forkserver.FORKSERVER_PRELOAD); an older arm may lack some
        try:
            importlib.import_module(name)
        except ImportError:
            if name == "sciml_bench.worker":  # an arm older than it: its worker loop is in the runner
                preload.append("sciml_bench.runner")
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears SIGCHLD
    server.send(b'{"ready": true}')
    live: set[int] = set()  # forked and not reaped: these pids are still this server's to signal
    while True:
        ready, _, _ = select.select([server, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        if server in ready:
            data, fds, _, _ = socket.recv_fds(server, 65536, 1)
            if not data:
                return
            msg = json.loads(data)
            if "kill" in msg:
                if msg["kill"] in live:  # a zombie at worst: reaping happens only here, in this thread
                    os.kill(msg["kill"], signal.SIGKILL)
            else:
                pid = _fork_worker(server, msg, fds[0], (wake_r, wake_w))
                live.add(pid)
                server.send(json.dumps({"pid": pid}).encode())
        _reap(server, live)


if __name__ == "__main__":
    serve(int(sys.argv[1]), json.loads(sys.argv[2]))
