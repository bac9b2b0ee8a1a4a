"""The CPUs this process may run on (its affinity), read in one place: the environment fingerprint and the
loader probe record it, the rounds run one count per core, and ``ab --duet`` splits it in two halves."""
from __future__ import annotations

import os


def allowed_cpus() -> list[int] | None:
    """The sorted ids of the CPUs this process may run on, or None where the platform cannot say."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return None


def affinity_count() -> int | None:
    """How many CPUs this process may run on, or None where the platform cannot say."""
    cpus = allowed_cpus()
    return len(cpus) if cpus is not None else None


def usable_cores() -> int:
    """Cores this process may run on: its affinity, else the machine's count (at least 1)."""
    return affinity_count() or max(1, os.cpu_count() or 1)
