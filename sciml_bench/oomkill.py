"""The kernel OOM killer's evidence: whether a process that died from SIGKILL was killed for memory.

A SIGKILL carries no reason. Three signs say "out of memory": the cgroup's ``oom_kill`` counter went up
since the process started (a ``Mark`` taken before it could be killed), the kernel log names its pid in a
line written since then (``/dev/kmsg``, root-only on most systems), or its resident set was near the memory
limit (where the caller sampled it). ``supervise`` asks for a case's worker and its DataLoader workers,
``distributed`` for a DDP rank; without a sign the status stays ``crashed`` and the reason says which signs
were looked for (``no_sign``). The counter is the cgroup's: with several cases alive at once, another
process's OOM kill in the same cgroup counts too.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mark:
    """The cgroup's oom_kill count (None: unreadable) and the wall time, before a process could be killed."""

    kills: int | None
    time: float


def mark() -> Mark:
    return Mark(kill_count(), time.time())


def no_sign(rss: bool = False) -> str:
    """The reason's words when ``evidence`` found nothing; ``rss``: the resident set was sampled too."""
    return ("with no sign of the OOM killer (cgroup oom_kill count unchanged or unreadable, "
            + ("RSS below 80% of the limit, " if rss else "") + "no kernel log line)")


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


def kernel_log() -> list[str]:
    """The kernel log's records (``/dev/kmsg``: ``priority,sequence,microseconds since boot,flags;text``),
    or [] where it is not readable."""
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
        return []  # /dev/kmsg is root-only on most systems
    return [line for c in chunks for line in c.splitlines() if ";" in line]


def _kernel_log_names(pid: int, since: float) -> bool:
    """A kernel-log line written after ``since`` (epoch seconds) says the OOM killer killed ``pid``: an
    older one is another process's that had the same pid, or another pid namespace's."""
    import psutil

    boot = psutil.boot_time()
    for line in kernel_log():
        head, text = line.split(";", 1)
        if f"Killed process {pid} " not in text and f"Killed process {pid}," not in text:
            continue
        try:
            written = boot + int(head.split(",")[2]) / 1e6
        except (IndexError, ValueError):
            continue
        if written >= since - 1.0:  # boot_time is rounded to the second
            return True
    return False


def evidence(pid: int, since: Mark, rss: int = 0) -> str | None:
    """Why a SIGKILL of ``pid`` looks like the OOM killer's, or None: the cgroup's oom_kill counter went up
    from ``since``, the kernel log names the pid after ``since``, or ``rss`` (its largest seen) was near the
    limit."""
    after = kill_count()
    if since.kills is not None and after is not None and after > since.kills:
        return f"cgroup memory.events oom_kill {since.kills} -> {after}"
    if _kernel_log_names(pid, since.time):
        return f"kernel log: Killed process {pid}"
    limit = memory_limit()
    if rss and rss >= 0.8 * limit:
        return f"RSS {rss / 2 ** 30:.1f} GiB of a {limit / 2 ** 30:.1f} GiB limit"
    return None
