"""Energy: the GPU's total-energy counter (NVML) read around timed work, giving energy per step and power.

NVML's ``nvmlDeviceGetTotalEnergyConsumption`` counts the millijoules the whole device has used since
the driver loaded (Volta and newer). Two limits follow and travel with every figure:

- it is the whole device: anything else running on the GPU at the time counts too;
- it is updated at a coarse, device-dependent interval (not measured here), so a window
  not much longer than that gives a coarse figure (or none: the counter may not move at all). Each
  metric keeps its windows' lengths (``window_s``) so that a reader can judge.

Where it cannot be read (a CPU case, no ``pynvml``, a counter NVML does not support, a MIG instance)
the metrics are absent with the reason, never 0.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sciml_bench.stats import summarize

COUNTER_NOTE = ("whole-device NVML energy counter, updated at a coarse device-dependent interval: windows (window_s) not "
                "much longer than that give coarse figures; other work on the GPU counts too")
PIP_HINT = "pip install 'sciml-bench[energy]'"


class EnergyMeter:
    """The total-energy counter of one CUDA device through NVML. Open it once per worker (``open_meter``)."""

    def __init__(self, nvml: Any, handle: Any, uuid: str, power_limit_W: float | None) -> None:
        self._nvml, self._handle = nvml, handle
        self.uuid, self.power_limit_W = uuid, power_limit_W

    def read(self) -> float | None:
        """The counter now, in mJ; None where the read fails (that window's figure is then absent)."""
        try:
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except self._nvml.NVMLError:
            return None

    def describe(self) -> dict[str, Any]:
        """What a record keeps beside the figures: which device, and its enforced power limit (W)."""
        return {"uuid": self.uuid, "power_limit_W": self.power_limit_W}


def device_uuid(index: int | None) -> str:
    """NVML's UUID of CUDA device ``index`` (None: the current one).

    By UUID, not by index: NVML numbers every GPU of the machine in PCI order, while CUDA numbers
    the visible ones (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER); the UUID is the same on both sides."""
    import torch

    u = str(torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index).uuid)
    return u if u.startswith(("GPU-", "MIG-")) else f"GPU-{u}"


def open_meter(device: Any, nvml: Any = None, uuid: str | None = None) -> EnergyMeter | str:
    """The energy meter of ``device`` (a ``torch.device``), or the reason there is none.

    ``nvml``: the ``pynvml`` module (injected by tests; imported here otherwise); ``uuid``: the
    device's NVML UUID (``device_uuid`` of the device's index otherwise)."""
    if device.type != "cuda":
        return f"case ran on {device.type.upper()}: energy needs a CUDA device with NVML"
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return f"nvidia-ml-py (pynvml) is not installed ({PIP_HINT})"
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        return f"NVML did not initialise: {e}"
    uuid = uuid or device_uuid(device.index)
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
    except nvml.NVMLError as e:  # e.g. a MIG instance, whose share of the GPU's counter NVML cannot give
        return f"no NVML device with this CUDA device's UUID {uuid}: {e}"
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except nvml.NVMLError_NotSupported:
        return "this GPU has no NVML total-energy counter (NotSupported; it needs Volta or newer)"
    except nvml.NVMLError as e:
        return f"NVML energy counter unreadable: {e}"
    try:
        limit: float | None = nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3  # mW -> W
    except nvml.NVMLError:
        limit = None
    return EnergyMeter(nvml, handle, uuid, limit)


class BlockWindow:
    """The counter around exactly the measured calls of one ``Timer.blocked_autorange`` block.

    The Timer runs its ``setup`` statement (``mark``) before every timeit call, outside the timed
    region and after the previous call's device sync, and calls ``done`` after each measurement.
    The last mark before the first measurement and the read after the last one bracket exactly the
    measured calls: the block-size calibration before them, whose call count the Timer does not
    report, is left out, so energy / steps is exact (up to the counter's update interval)."""

    def __init__(self, meter: EnergyMeter, clock: Callable[[], float] = time.perf_counter) -> None:
        self._meter, self._clock = meter, clock
        self._last: tuple[float, float | None] | None = None  # the latest mark: (time, mJ)
        self._start: tuple[float, float | None] | None = None
        self._end: tuple[float, float | None] | None = None
        self._steps = 0

    def mark(self) -> None:
        self._last = (self._clock(), self._meter.read())

    def done(self, number: int, time_spent: float) -> None:
        if self._start is None:
            self._start = self._last
        self._steps += number
        self._end = (self._clock(), self._meter.read())

    def result(self) -> dict[str, Any] | None:
        """``{start_mJ, end_mJ, steps, seconds}`` of the measured calls; None if nothing was measured."""
        if self._start is None or self._end is None:
            return None
        return {"start_mJ": self._start[1], "end_mJ": self._end[1], "steps": self._steps,
                "seconds": self._end[0] - self._start[0]}


def energy_metrics(windows: list[dict[str, Any] | None], power_limit_W: float | None = None,
                   uuid: str | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(metrics, absent): ``energy_per_step`` (J) and ``avg_power`` (W) from one window per timed block.

    Each window (``BlockWindow.result``) gives one sample of each: energy / steps and energy / wall
    seconds; their median and 95% CI come from ``stats.summarize``, as step time's do from the
    per-block medians. A window the counter did not cover (unread, or went backwards: wrapped or
    reset) or did not advance over (shorter than its update interval) makes both absent, with the
    reason: a figure from the other blocks alone would hide it. ``power_limit_W`` (the enforced
    limit) is kept beside the power, with the power as a fraction of it: a run-time check on the
    counter's scale, since the average cannot exceed the limit by much. ``uuid``: the NVML device read.
    """
    if not windows:
        return {}, {}
    n = len(windows)
    why = None
    bad = sum(w is None or w.get("start_mJ") is None or w.get("end_mJ") is None or not w.get("steps")
              or not w.get("seconds") or w["seconds"] <= 0 for w in windows)
    if bad:
        why = f"energy counter unreadable in {bad} of {n} timed blocks"
    else:
        deltas = [w["end_mJ"] - w["start_mJ"] for w in windows]
        if any(d < 0 for d in deltas):
            why = (f"energy counter went backwards in {sum(d < 0 for d in deltas)} of {n} timed blocks "
                   "(it wrapped, or the driver reset it)")
        elif any(d == 0 for d in deltas):
            still = [w["seconds"] for w, d in zip(windows, deltas) if d == 0]
            why = (f"energy counter did not advance in {len(still)} of {n} timed blocks (of {max(still):.2g} s "
                   "or less): they are shorter than its update interval; time longer blocks (--round-time)")
    if why:
        return {}, {"energy_per_step": why, "avg_power": why}
    per_step = [d / 1e3 / w["steps"] for d, w in zip(deltas, windows)]
    power = [d / 1e3 / w["seconds"] for d, w in zip(deltas, windows)]
    e, p = summarize(per_step), summarize(power)
    raw = {"steps": [w["steps"] for w in windows], "window_s": [w["seconds"] for w in windows],
           "counter_mJ": [[w["start_mJ"], w["end_mJ"]] for w in windows], "nvml_uuid": uuid}
    metrics = {
        "energy_per_step": {"value": e["median"], "unit": "J", "ci_low": e["ci_low"], "ci_high": e["ci_high"],
                            "iqr": e["iqr"], "n": e["n"], "samples": per_step, **raw, "note": COUNTER_NOTE},
        "avg_power": {"value": p["median"], "unit": "W", "ci_low": p["ci_low"], "ci_high": p["ci_high"],
                      "iqr": p["iqr"], "n": p["n"], "samples": power, "power_limit_W": power_limit_W,
                      "note": "energy / wall time of each block's measured calls"}}
    if power_limit_W:
        metrics["avg_power"]["limit_fraction"] = p["median"] / power_limit_W
    return metrics, {}


class Tally:
    """The counter summed over separate windows: a fit's training segments, its evaluations left out.

    ``begin`` opens a window (a no-op while one is open), ``end`` closes it; call both after a device
    sync. A window the counter did not cover (unread, went backwards) breaks the tally: ``joules``
    is then None and ``broken`` says why."""

    def __init__(self, meter: EnergyMeter) -> None:
        self._meter = meter
        self._open = False
        self._start: float | None = None
        self.mJ = 0.0
        self.broken: str | None = None

    def begin(self) -> None:
        if not self._open and self.broken is None:
            self._open, self._start = True, self._meter.read()

    def end(self) -> None:
        if not self._open:
            return
        self._open = False
        now = self._meter.read()
        if self._start is None or now is None:
            self.broken = "energy counter unreadable"
        elif now < self._start:
            self.broken = "energy counter went backwards (it wrapped, or the driver reset it)"
        else:
            self.mJ += now - self._start

    def joules(self) -> float | None:
        return None if self.broken else self.mJ / 1e3
