"""User-facing errors: one line, naming the problem and the allowed values."""
from __future__ import annotations

import difflib
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


def classify(exc: BaseException) -> tuple[str, str]:
    """A record's (status, reason) for an exception a case raised: a DDP rank's own status
    (``distributed.RankFailure``), ``skipped`` for Unsupported, ``oom`` for out of memory, else ``error``."""
    import torch

    msg = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
    if getattr(exc, "status", None):
        return exc.status, str(exc)[:500]
    if isinstance(exc, Unsupported):
        return "skipped", str(exc)
    text = str(exc).lower()
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (isinstance(exc, RuntimeError) and any(
            s in text for s in ("out of memory", "not enough memory", "can't allocate memory"))):
        return "oom", msg
    return "error", msg
