"""Supervision: where a pass's workers come from."""
import os
import socket
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
