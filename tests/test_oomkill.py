"""The OOM killer's evidence, and the statuses it decides: a case's DataLoader worker and a DDP rank
killed by SIGKILL are ``oom`` only with the kernel's evidence, else ``crashed`` saying none was found.
The cgroup is faked (a real OOM kill cannot be provoked safely in a test); the real SIGKILL paths,
without evidence, are in tests/test_faults.py and tests/test_distributed.py."""
import json
import subprocess

import pytest

from sciml_bench import oomkill
from sciml_bench.cases import Case

NO_SUCH_PID = 99_999_999  # above any pid_max: no kernel log line can name it


@pytest.fixture
def cgroup(tmp_path, monkeypatch):
    """A fake cgroup v2 directory (write its memory.events and memory.max) and an empty kernel log."""
    monkeypatch.setattr(oomkill, "cgroup_dir", lambda: tmp_path)
    monkeypatch.setattr(oomkill, "kernel_log", lambda: [])
    (tmp_path / "memory.max").write_text("max\n")

    def set_kills(n: int) -> None:
        (tmp_path / "memory.events").write_text(f"low 0\nhigh 0\nmax 4\noom 1\noom_kill {n}\n")

    set_kills(2)
    return set_kills


def test_evidence_is_a_risen_counter_a_new_kernel_line_or_an_rss_near_the_limit(cgroup, tmp_path, monkeypatch):
    import time

    import psutil

    since = oomkill.mark()
    assert since.kills == 2 and oomkill.evidence(NO_SUCH_PID, since) is None, "the counter as it was: no sign"
    cgroup(3)
    assert oomkill.evidence(NO_SUCH_PID, since) == "cgroup memory.events oom_kill 2 -> 3"
    unread = oomkill.Mark(None, since.time)
    assert oomkill.evidence(NO_SUCH_PID, unread) is None, "a counter unread at the start proves nothing"
    # the kernel log: only a line written since the mark (an older one is another process that had the pid)
    usec = int((time.time() - psutil.boot_time()) * 1e6)
    line = f"3,1207,{{}},-;Out of memory: Killed process {NO_SUCH_PID} (python) total-vm:9000000kB"
    monkeypatch.setattr(oomkill, "kernel_log", lambda: [line.format(usec - 600_000_000)])
    assert oomkill.evidence(NO_SUCH_PID, unread) is None, "a line from ten minutes before the mark"
    monkeypatch.setattr(oomkill, "kernel_log", lambda: [line.format(usec + 1_000_000)])
    assert oomkill.evidence(NO_SUCH_PID, unread) == f"kernel log: Killed process {NO_SUCH_PID}"
    assert oomkill.evidence(NO_SUCH_PID + 1, unread) is None, "another pid"
    monkeypatch.setattr(oomkill, "kernel_log", lambda: [])
    (tmp_path / "memory.max").write_text(str(2 ** 30))
    assert oomkill.evidence(NO_SUCH_PID, unread, rss=int(0.9 * 2 ** 30)) == "RSS 0.9 GiB of a 1.0 GiB limit"
    assert oomkill.evidence(NO_SUCH_PID, unread, rss=int(0.5 * 2 ** 30)) is None
    (tmp_path / "memory.events").unlink()
    assert oomkill.kill_count() is None


def test_a_dataloader_worker_killed_for_memory_makes_the_case_oom(cgroup):
    from sciml_bench.supervise import Worker

    w = Worker.__new__(Worker)  # the verdict only: no process
    w.oom_mark = oomkill.mark()
    # as errors.classify hands it on: the exception's first line, stripped
    killed = ("crashed", f"RuntimeError: DataLoader worker (pid {NO_SUCH_PID}) is killed by signal: Killed.")
    status, reason = w._loader_verdict(killed)
    assert (status, reason) == ("crashed", killed[1][:-1] + "; " + oomkill.no_sign()), reason
    assert "RSS" not in reason, "a DataLoader worker's memory is not sampled: the reason does not claim it"
    cgroup(3)
    status, reason = w._loader_verdict(killed)
    assert (status, reason) == ("oom", killed[1] + " (out of memory: cgroup memory.events oom_kill 2 -> 3)")
    lost = ("crashed", f"RuntimeError: DataLoader worker (pid(s) {NO_SUCH_PID}, 7) exited unexpectedly")
    assert w._loader_verdict(lost)[0] == "oom", "found dead without a word how: the counter decides"
    for other in (("crashed", f"RuntimeError: DataLoader worker (pid {NO_SUCH_PID}) is killed by signal: "
                              "Segmentation fault."),
                  ("crashed", f"RuntimeError: DataLoader worker (pid {NO_SUCH_PID}) exited unexpectedly with exit "
                              "code 1. Details are lost due to multiprocessing."),
                  ("error", "RuntimeError: planted fault"), ("ok", {"metrics": {}})):
        assert w._loader_verdict(other) == other, "not a SIGKILL: the reply as it came"


def test_a_rank_killed_for_memory_makes_the_ddp_case_oom(cgroup, tmp_path):
    from sciml_bench.distributed import LAUNCHER_REPORT, RankGroup

    def failure(since: oomkill.Mark) -> tuple[str, str]:
        g = RankGroup.__new__(RankGroup)  # _failure only: torchrun's report as it leaves it, a finished process
        g.case, g.conn, g._listener, g.oom_mark = Case(model="mlp", ddp_ranks=2), None, None, since
        g._failures = str(tmp_path / "failures")
        (tmp_path / "failures").mkdir()
        (tmp_path / "failures" / LAUNCHER_REPORT).write_text(json.dumps(
            [{"rank": 1, "pid": NO_SUCH_PID, "exitcode": -9, "signal": "SIGKILL"}]))
        g.proc = subprocess.Popen(["true"], start_new_session=True)
        f = g._failure()
        return f.status, str(f)

    since = oomkill.mark()
    status, reason = failure(since)
    assert status == "crashed" and reason.startswith(f"rank 1 of 2 (pid {NO_SUCH_PID}) died from SIGKILL"), reason
    assert oomkill.no_sign() in reason
    cgroup(5)
    assert failure(since) == ("oom", f"rank 1 of 2 (pid {NO_SUCH_PID}) killed by SIGKILL: out of memory (cgroup "
                                     "memory.events oom_kill 2 -> 5); its peers then stopped")
