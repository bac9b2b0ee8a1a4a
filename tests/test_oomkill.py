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
    """A fake cgroup v2 directory: write its memory.events and memory.max."""
    monkeypatch.setattr(oomkill, "cgroup_dir", lambda: tmp_path)
    (tmp_path / "memory.max").write_text("max\n")

    def set_kills(n: int) -> None:
        (tmp_path / "memory.events").write_text(f"low 0\nhigh 0\nmax 4\noom 1\noom_kill {n}\n")

    set_kills(2)
    return set_kills


def test_evidence_is_a_risen_counter_or_an_rss_near_the_limit_and_none_without_either(cgroup, tmp_path):
    assert oomkill.kill_count() == 2
    assert oomkill.evidence(NO_SUCH_PID, 2) is None, "the counter as it was: no sign"
    cgroup(3)
    assert oomkill.evidence(NO_SUCH_PID, 2) == "cgroup memory.events oom_kill 2 -> 3"
    assert oomkill.evidence(NO_SUCH_PID, None) is None, "a counter unread at the start proves nothing"
    (tmp_path / "memory.max").write_text(str(2 ** 30))
    assert oomkill.evidence(NO_SUCH_PID, 3, rss=int(0.9 * 2 ** 30)) == "RSS 0.9 GiB of a 1.0 GiB limit"
    assert oomkill.evidence(NO_SUCH_PID, 3, rss=int(0.5 * 2 ** 30)) is None
    (tmp_path / "memory.events").unlink()
    assert oomkill.kill_count() is None


def test_a_dataloader_worker_killed_for_memory_makes_the_case_oom(cgroup):
    from sciml_bench.supervise import Worker

    w = Worker.__new__(Worker)  # the verdict only: no process
    w.oom_kills = 2
    killed = ("crashed", f"RuntimeError: DataLoader worker (pid {NO_SUCH_PID}) is killed by signal: Killed. ")
    status, reason = w._loader_verdict(killed)
    assert status == "crashed" and reason.endswith(oomkill.NO_SIGN) and "Killed; with no sign" in reason, reason
    cgroup(3)
    status, reason = w._loader_verdict(killed)
    assert (status, reason) == ("oom", killed[1] + " (out of memory: cgroup memory.events oom_kill 2 -> 3)")
    lost = ("crashed", f"RuntimeError: DataLoader worker (pid(s) {NO_SUCH_PID}, 7) exited unexpectedly")
    assert w._loader_verdict(lost)[0] == "oom", "found dead without a word how: the counter decides"
    for other in (("crashed", f"RuntimeError: DataLoader worker (pid {NO_SUCH_PID}) is killed by signal: "
                              "Segmentation fault. "),
                  ("crashed", f"RuntimeError: DataLoader worker (pid {NO_SUCH_PID}) exited unexpectedly with exit "
                              "code 1. Details are lost"),
                  ("error", "RuntimeError: planted fault"), ("ok", {"metrics": {}})):
        assert w._loader_verdict(other) == other, "not a SIGKILL: the reply as it came"


def test_a_rank_killed_for_memory_makes_the_ddp_case_oom(cgroup, tmp_path):
    from sciml_bench.distributed import LAUNCHER_REPORT, RankGroup

    def failure(kills_before: int) -> tuple[str, str]:
        g = RankGroup.__new__(RankGroup)  # _failure only: torchrun's report as it leaves it, a finished process
        g.case, g.conn, g._listener, g.oom_kills = Case(model="mlp", ddp_ranks=2), None, None, kills_before
        g._failures = str(tmp_path / "failures")
        (tmp_path / "failures").mkdir()
        (tmp_path / "failures" / LAUNCHER_REPORT).write_text(json.dumps(
            [{"rank": 1, "pid": NO_SUCH_PID, "exitcode": -9, "signal": "SIGKILL"}]))
        g.proc = subprocess.Popen(["true"], start_new_session=True)
        f = g._failure()
        return f.status, str(f)

    status, reason = failure(2)
    assert status == "crashed" and reason.startswith(f"rank 1 of 2 (pid {NO_SUCH_PID}) died from SIGKILL"), reason
    assert oomkill.NO_SIGN in reason
    cgroup(5)
    assert failure(2) == ("oom", f"rank 1 of 2 (pid {NO_SUCH_PID}) killed by SIGKILL: out of memory (cgroup "
                                 "memory.events oom_kill 2 -> 5); its peers then stopped")
