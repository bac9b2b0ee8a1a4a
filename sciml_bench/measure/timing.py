"""Step timing through torch.utils.benchmark: warmup, then short timed blocks (one per round),
each with the CPU it actually got (a busy machine must be visible, not silent)."""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark

from sciml_bench.measure.energy import BlockWindow, EnergyMeter

# A block is *starved* when some thread of the worker waited for a CPU (runnable, not running) for
# at least STARVED_WAIT of the block's wall time (Linux schedstat). Where schedstat is unreadable,
# when the worker got less than STARVED_SHARE of the CPU time it asked for (wall x threads). The
# run-queue wait is the primary signal because CPU share alone cannot tell a starved worker from a
# step that simply uses fewer cores than its thread count (small ops run on one thread).
STARVED_WAIT = 0.25
STARVED_SHARE = 0.5


def _on_cuda(device: torch.device | str | None) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _nothing() -> None:
    pass


def device_sync(device: torch.device | str | None) -> Callable[[], None]:
    """What waits for ``device``'s queued work before a clock is read: ``torch.cuda.synchronize`` on a CUDA
    device (its kernels run asynchronously); nothing elsewhere, where an op has finished when it returns."""
    return functools.partial(torch.cuda.synchronize, device) if _on_cuda(device) else _nothing


def warmup(step: Callable[[], object], min_steps: int = 3, min_time: float = 0.0,
           device: torch.device | str | None = None) -> dict[str, float]:
    """Run ``step`` on ``device`` until both ``min_steps`` calls and ``min_time`` seconds have passed.

    The first call is timed on its own: it carries lazy initialization (optimizer state, cuDNN
    autotuning, compilation) that must stay out of the steady-state figures but is worth
    reporting. Returns ``first_step_s`` and ``warmup_steps``.
    """
    sync = device_sync(device)
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


def run_queue_waits() -> dict[str, int] | None:
    """{thread id: ns it has spent runnable but waiting for a CPU}, from /proc schedstat; None where unreadable."""
    out = {}
    try:
        for task in Path("/proc/self/task").iterdir():
            try:
                out[task.name] = int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
    except OSError:
        return None
    return out or None


def cpu_block(wall: float, cpu: float, threads: int, waits0: dict[str, int] | None,
              waits1: dict[str, int] | None, cuda: bool = False) -> dict[str, Any]:
    """What one timed block got from the machine: CPU share of ``threads`` cores, run-queue wait, starved.

    On CUDA the host thread sleeps in synchronisation, so a low CPU share is normal there: only the
    run-queue wait can say starved."""
    share = cpu / (wall * threads) if wall > 0 and threads else None
    wait = None
    if waits0 is not None and waits1 is not None and wall > 0:
        wait = max((waits1[t] - waits0.get(t, 0) for t in waits1), default=0) / 1e9 / wall
    starved = (wait >= STARVED_WAIT) if wait is not None else (
        not cuda and share is not None and share < STARVED_SHARE)
    return {"wall_s": wall, "cpu_s": cpu, "threads": threads, "cpu_share": share, "run_queue_wait": wait,
            "starved": bool(starved)}


def time_block(step: Callable[[], object], min_run_time: float, num_threads: int,
               label: str = "step", description: str = "", meter: EnergyMeter | None = None,
               device: torch.device | str | None = None) -> dict[str, Any]:
    """One timed block of ``step`` (on ``device``) via ``Timer.blocked_autorange``, and the CPU it received.

    The Timer synchronizes CUDA around each measurement and picks how many calls to run per
    measurement from ``min_run_time``; ``times`` holds each measurement's per-call time. The
    block's process CPU time against wall x ``num_threads`` (``cpu_share``) and the longest
    run-queue wait of any worker thread (``run_queue_wait``, a fraction of wall) say whether the
    machine actually gave the worker the cores it asked for (``starved``, see STARVED_WAIT).
    ``meter`` (a GPU's, ``measure.energy``): ``energy`` holds the counter around the block's measured
    calls, read between measurements, outside the timed region (``energy.BlockWindow``); the whole
    block rather than each call, as the counter updates only at a coarse, device-dependent interval.
    """
    window = BlockWindow(meter) if meter is not None else None
    timer = benchmark.Timer(stmt="step()", setup="mark()" if window else "pass",
                            globals={"step": step, **({"mark": window.mark} if window else {})},
                            num_threads=num_threads, label=label, description=description)
    waits0, c0, t0 = run_queue_waits(), time.process_time(), time.perf_counter()
    times = list(timer.blocked_autorange(callback=window.done if window else None, min_run_time=min_run_time).times)
    wall, cpu, waits1 = time.perf_counter() - t0, time.process_time() - c0, run_queue_waits()
    out = {"times": times, **cpu_block(wall, cpu, num_threads, waits0, waits1, _on_cuda(device))}
    if window:
        out["energy"] = window.result()
    return out


def machine_load() -> dict[str, Any]:
    """Load averages and runnable processes now (Linux /proc; os.getloadavg elsewhere)."""
    out: dict[str, Any] = {"time": time.time()}
    try:
        out["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running"):
                out["procs_running"] = int(line.split()[1])  # includes this process
    except OSError:
        pass
    return out


def time_fixed(step: Callable[[], object], number: int, repeats: int, num_threads: int,
               label: str = "step") -> list[float]:
    """Per-call times (s) of ``repeats`` measurements of exactly ``number`` calls each via ``Timer.timeit``.

    For steps with collectives (DDP ranks), where every process must make the same number of
    calls: ``blocked_autorange`` sizes its blocks from each process's own clock, so ranks would
    disagree and deadlock. ``timeit`` also runs a couple of untimed warmup calls, the same count
    on every rank. And for the anchor, whose blocks must stay short (``measure.anchor``).
    """
    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=num_threads, label=label)
    return [timer.timeit(number).times[0] for _ in range(repeats)]
