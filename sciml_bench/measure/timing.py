"""Step timing through torch.utils.benchmark: warmup, then short timed blocks (one per round)."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils import benchmark


def warmup(step: Callable[[], object], min_steps: int = 3, min_time: float = 0.0) -> dict[str, float]:
    """Run ``step`` until both ``min_steps`` calls and ``min_time`` seconds have passed.

    The first call is timed on its own: it carries lazy initialization (optimizer state, cuDNN
    autotuning, compilation) that must stay out of the steady-state figures but is worth
    reporting. Returns ``first_step_s`` and ``warmup_steps``.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    n = 1
    while n < min_steps or time.perf_counter() - t0 < min_time:
        step()
        n += 1
    sync()
    return {"first_step_s": first, "warmup_steps": n}


def time_block(step: Callable[[], object], min_run_time: float, num_threads: int,
               label: str = "step", description: str = "") -> list[float]:
    """Per-call times (s) of one timed block of ``step`` via ``Timer.blocked_autorange``.

    The Timer synchronizes CUDA around each measurement and picks how many calls to run per
    measurement from ``min_run_time``; each returned value is one measurement's per-call time.
    """
    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=num_threads,
                            label=label, description=description)
    return list(timer.blocked_autorange(min_run_time=min_run_time).times)


def time_fixed(step: Callable[[], object], number: int, repeats: int, num_threads: int,
               label: str = "step") -> list[float]:
    """Per-call times (s) of ``repeats`` measurements of exactly ``number`` calls each via ``Timer.timeit``.

    For steps with collectives (DDP ranks), where every process must make the same number of
    calls: ``blocked_autorange`` sizes its blocks from each process's own clock, so ranks would
    disagree and deadlock. ``timeit`` also runs a couple of untimed warmup calls, the same count
    on every rank.
    """
    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=num_threads, label=label)
    return [timer.timeit(number).times[0] for _ in range(repeats)]
