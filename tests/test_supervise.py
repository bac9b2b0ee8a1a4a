"""Supervision: where a pass's workers come from."""
import os
import socket
import sys
from dataclasses import asdict

from sciml_bench.cases import Case
from sciml_bench.lifetime import RUN_PID_ENV
from sciml_bench.worker import RunOptions


def test_without_fork_servers_a_pass_spawns_its_workers(tmp_path, monkeypatch):
    """Where the platform cannot run a fork server (here: no SOCK_SEQPACKET), ``pass_context`` spawns
    each worker as a fresh interpreter: it answers like any worker and the context closes like a server's."""
    from sciml_bench import supervise

    monkeypatch.delattr(socket, "SOCK_SEQPACKET")
    monkeypatch.setenv(RUN_PID_ENV, "")  # pass_context marks this process as the run; restored afterwards
    ctx = supervise.pass_context(tmp_path / "server.log")
    assert isinstance(ctx, supervise.SpawnContext)
    case, opts = Case(model="mlp", mode="infer", batch_size=2), RunOptions(threads=1, timeout=60)
    w = supervise.Worker(ctx, case, tmp_path / "worker.log", opts)
    try:
        status, pid = w.call(None, supervise.START_TIMEOUT, charge=False)
        assert status == "ready" and pid == w.proc.pid, (status, pid)
        status, info = w.call(("setup", case.to_dict(), asdict(opts), False), w.budget)
        assert status == "ok", info
        assert info["parent_pid"] == os.getpid(), "spawned by the run itself: no server in between"
    finally:
        w.stop()
        ctx.close()
    assert w.proc.exitcode == 0, f"the worker left on 'stop': {w.proc.exitcode}"
    assert not (tmp_path / "server.log").exists(), "no fork server was started"


def _bare_server(tmp_path, monkeypatch, name: str = "server"):
    """A fork server that preloads nothing (fast), as a pass's ``ServerContext``."""
    from sciml_bench import forkserver, supervise

    monkeypatch.setattr(forkserver, "FORKSERVER_PRELOAD", [])
    monkeypatch.setenv(RUN_PID_ENV, "")  # pass_context marks this process as the run; restored afterwards
    return supervise.pass_context(tmp_path / f"{name}.log")


def test_a_worker_is_killed_by_its_server_never_by_a_pid_that_may_be_recycled(tmp_path, monkeypatch):
    """The run never signals a forked worker's pid itself: once the server has reaped it, the kernel may
    give that pid to any process. The server kills only its own unreaped children."""
    import subprocess
    import time

    import psutil

    from sciml_bench import forkserver

    ctx = _bare_server(tmp_path, monkeypatch)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _conn, child = ctx.Pipe()  # kept open: the worker waits on it for a command
        proc = ctx.Process(target=None, args=(child, str(tmp_path / "worker.log"), 1))
        proc.start()
        child.close()
        assert proc.is_alive(), proc.exitcode

        def refuse(*a):
            raise AssertionError("the run signalled a pid itself")

        monkeypatch.setattr(forkserver.os, "kill", refuse)
        proc.kill()
        proc.join(10)
        assert proc.exitcode == -9, f"killed by its server: {proc.exitcode}"
        ctx.server.kill(bystander.pid)  # a pid the server never forked (or reaped long ago)
        ctx.server.kill(proc.pid)  # reaped: maybe someone else's by now
        time.sleep(0.5)
        assert bystander.poll() is None and psutil.Process(bystander.pid).status() != psutil.STATUS_ZOMBIE, \
            "the server signalled a process that is not its unreaped child"
    finally:
        monkeypatch.undo()
        bystander.kill()
        bystander.wait()
        ctx.close()


def test_each_fork_server_gets_the_plugin_environment_of_its_own_start(tmp_path, monkeypatch):
    """A pass's server (and an A/B arm's) takes the environment as it is when it starts, not the one
    of the first server of the process: a second run (API) with other plugins gets them."""
    import psutil

    from sciml_bench.ab import Arm, source_root

    seen = []
    for plugins in ("plug_a", "plug_b"):
        monkeypatch.setenv("SCIML_BENCH_PLUGINS", plugins)
        for ctx in (_bare_server(tmp_path, monkeypatch, plugins),
                    Arm("new", "interpreter", sys.executable, [source_root()]).context(tmp_path / f"arm-{plugins}.log")):
            try:
                seen.append(psutil.Process(ctx.server.popen.pid).environ()["SCIML_BENCH_PLUGINS"])
            finally:
                ctx.close()
    assert seen == ["plug_a", "plug_a", "plug_b", "plug_b"], seen
