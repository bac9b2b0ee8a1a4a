"""Process lifetime: every process a run starts dies with the run, even on kill -9 of the run.

The kernel does it (``PR_SET_PDEATHSIG``), so no cooperation from a hung worker is needed. A
worker's parent is the fork server, whose parent is the run: the run's death kills the server,
which kills the workers; the resource tracker then sees its pipe close and exits too.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

RUN_PID_ENV = "SCIML_BENCH_RUN_PID"  # pid of the process running the suite, inherited by its children
_PR_SET_PDEATHSIG = 1


def mark_run() -> None:
    """Record this process as the run that its children must not outlive."""
    os.environ[RUN_PID_ENV] = str(os.getpid())


def die_with_parent(parent: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies; exit now if the run is gone, or
    (``parent``: the pid it was started by) if that parent is.

    Returns False where the kernel has no such call (not Linux): there a kill -9 can orphan."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    run = int(os.environ.get(RUN_PID_ENV, "0") or 0)
    if (run and not _alive(run)) or (parent is not None and os.getppid() != parent):  # died before the call
        os._exit(1)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Imported by the fork server as its first preload: a direct child of the run ties its life to it,
# and one whose run died while it started (it would go on importing torch) leaves at once.
if os.environ.get(RUN_PID_ENV, "").isdigit():
    if int(os.environ[RUN_PID_ENV]) == os.getppid():
        die_with_parent()
    elif not _alive(int(os.environ[RUN_PID_ENV])):
        os._exit(1)
