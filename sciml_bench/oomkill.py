"""The kernel OOM killer's evidence: whether a process that died from SIGKILL was killed for memory.

A SIGKILL carries no reason. Three signs say "out of memory": the cgroup's ``oom_kill`` counter went up
since the process started (``kill_count`` before, ``evidence`` after), the kernel log names its pid
(``/dev/kmsg``, root-only on most systems), or its resident set was near the memory limit. ``supervise``
asks for a case's worker and its DataLoader workers, ``distributed`` for a DDP rank; without a sign the
status stays ``crashed`` and the reason says which signs were looked for (``NO_SIGN``).
"""
from __future__ import annotations

import os
from pathlib import Path

NO_SIGN = ("with no sign of the OOM killer (cgroup oom_kill count unchanged or unreadable, RSS below 80% of "
           "the limit, no kernel log line)")


def cgroup_dir() -> Path | None:
    """This process's cgroup v2 directory, or None where there is none."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):  # cgroup v2
                return Path("/sys/fs/cgroup") / line[3:].strip().lstrip("/")
    except OSError:
        pass
    return None


def kill_count() -> int | None:
    """The cgroup's ``oom_kill`` counter (memory.events), or None where it is not readable."""
    d = cgroup_dir()
    try:
        for line in (d / "memory.events").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, TypeError, ValueError):
        pass
    return None


def memory_limit() -> int:
    """Bytes this process's cgroup may use (memory.max), else the machine's memory."""
    d = cgroup_dir()
    try:
        text = (d / "memory.max").read_text().strip()
        if text != "max":
            return int(text)
    except (OSError, TypeError, ValueError):
        pass
    import psutil

    return psutil.virtual_memory().total


def _kernel_log_names(pid: int) -> bool:
    chunks = []
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                try:
                    chunks.append(os.read(fd, 8192).decode(errors="replace"))
                except BlockingIOError:
                    break
        finally:
            os.close(fd)
    except OSError:
        return False  # /dev/kmsg is root-only on most systems
    return any(f"Killed process {pid} " in c or f"Killed process {pid}," in c for c in chunks)


def evidence(pid: int, kills_before: int | None, rss: int = 0) -> str | None:
    """Why a SIGKILL of ``pid`` looks like the OOM killer's, or None: the cgroup's oom_kill counter went up
    from ``kills_before``, the kernel log names the pid, or ``rss`` (its largest seen) was near the limit."""
    after = kill_count()
    if kills_before is not None and after is not None and after > kills_before:
        return f"cgroup memory.events oom_kill {kills_before} -> {after}"
    if _kernel_log_names(pid):
        return f"kernel log: Killed process {pid}"
    limit = memory_limit()
    if rss and rss >= 0.8 * limit:
        return f"RSS {rss / 2 ** 30:.1f} GiB of a {limit / 2 ** 30:.1f} GiB limit"
    return None
