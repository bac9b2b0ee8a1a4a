"""User-facing errors: one line, naming the problem and the allowed values."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class UsageError(ValueError):
    """Bad input from the user (CLI, suite file, Case field). The CLI prints it on one line, exit 2."""

    def __init__(self, message: object = ""):
        # User text quoted in a message (a --set value, a TOML string) must not break the one line.
        super().__init__(str(message).replace("\r", " ").replace("\n", " "))


class Unsupported(RuntimeError):
    """A case this device or build cannot run; recorded as ``status="skipped"`` with the reason."""


def unknown(kind: str, name: object, allowed: Iterable[object]) -> UsageError:
    """An error for an unknown ``name`` of ``kind``, listing allowed values and close matches."""
    allowed = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(name), allowed, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return UsageError(f"unknown {kind} {name!r}{hint}; expected one of: {', '.join(allowed)}")


# torch re-raises a DataLoader worker's exception in the loading process with the worker's traceback as text
_LOADER_WRAPPED = re.compile(r"Caught \w+ (in DataLoader worker process \d+)\.\nOriginal Traceback")
# ... and reports a worker that died (a signal: the OOM killer, a segfault, a bus error) as a RuntimeError:
# "is killed by signal: Killed" (a SIGKILL), "exited unexpectedly" (found dead, no word how) or "... with exit code N"
LOADER_DIED = re.compile(r"DataLoader worker \(pid\(?s?\)? (?P<pids>\d[\d, ]*)\) "
                         r"(?P<how>exited unexpectedly(?: with exit code -?\d+)?|is killed by signal: [^.]+)")


def classify(exc: BaseException) -> tuple[str, str]:
    """A record's (status, reason) for an exception a case raised: a DDP rank's own status
    (``distributed.RankFailure``), ``skipped`` for Unsupported, ``oom`` for out of memory, ``crashed``
    for a DataLoader worker that died, else ``error``. An exception raised in a DataLoader worker is
    judged and named by the worker's own error (its traceback's last line), with the worker named."""
    import torch

    msg = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
    if getattr(exc, "status", None):
        return exc.status, str(exc)[:500]
    if isinstance(exc, Unsupported):
        return "skipped", str(exc)
    text = str(exc).lower()
    wrapped = _LOADER_WRAPPED.match(str(exc))
    if wrapped:  # the worker's own last line (not its source lines, which could say anything)
        last = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][-1]
        text, msg = last.lower(), f"{last[:450]} ({wrapped.group(1)})"
    elif isinstance(exc, RuntimeError) and LOADER_DIED.search(str(exc)):
        return "crashed", msg
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (isinstance(exc, RuntimeError) and any(
            s in text for s in ("out of memory", "not enough memory", "can't allocate memory"))):
        return "oom", msg
    return "error", msg
