"""Memory of one step: peak CPU tensor bytes from the allocator's profiler events, CUDA peak, RSS."""
from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Iterable

import psutil
import torch
from torch._C._autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

_WINDOW = "sciml_bench::measured_step"


def tensor_bytes(tensors: Iterable[torch.Tensor], device_type: str = "cpu") -> int:
    """Bytes of the distinct storages behind ``tensors`` on ``device_type`` (shared storage counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type == device_type and t.untyped_storage().nbytes():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def cpu_step_peak_bytes(step: Callable[[], object]) -> int:
    """Peak increase of live CPU tensor bytes during one call of ``step``, over its start.

    Measured from the CPU allocator's events (``profile_memory=True``): the running sum of
    allocation (+) and free (-) sizes inside the measured call. ``step`` runs twice under the
    profiler and the second call is measured, so blocks the step frees (e.g. last step's
    gradients) were allocated under the profiler and their frees carry their sizes.
    Allocations outside PyTorch's CPU allocator (e.g. oneDNN scratch space) are not seen.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
        with record_function(_WINDOW):
            step()
    events = prof.profiler.kineto_results.events()
    window = next(e for e in events if e.name() == _WINDOW)
    t0, t1 = window.start_ns(), window.end_ns()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events
                 if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    live = peak = 0
    for ts, nbytes in mem:
        if t0 <= ts <= t1:
            live += nbytes
            peak = max(peak, live)
    return peak


def cuda_step_peak_bytes(step: Callable[[], object], device: torch.device) -> tuple[int, int]:
    """(peak allocated bytes during one ``step``, bytes allocated at its start) on a CUDA device."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device), start


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def step_memory(step: Callable[[], object], device: torch.device,
                state: Iterable[torch.Tensor]) -> dict[str, int]:
    """Tensor memory of one ``step`` on its device, in bytes: ``peak`` live during the step,
    ``state`` live at its start, and ``step`` = peak - state (activations and temporaries).

    CUDA reads the caching allocator's peak statistics. CPU has no such statistics, so the
    state is the distinct storages of ``state`` (parameters, gradients, optimizer state,
    batch) and the step's increase comes from the allocator's profiler events.
    """
    if device.type == "cuda":
        peak, start = cuda_step_peak_bytes(step, device)
        return {"peak": peak, "state": start, "step": peak - start}
    increase = cpu_step_peak_bytes(step)
    held = tensor_bytes(state, "cpu")
    return {"peak": held + increase, "state": held, "step": increase}
