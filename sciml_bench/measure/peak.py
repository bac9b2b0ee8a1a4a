"""Machine peak calibration: achieved FLOP/s of a large GEMM per dtype, the roofline's ceiling."""
from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils import benchmark

# GEMM side per device: large enough to reach the BLAS's steady state, small enough that the
# whole calibration stays around a second or two on a 2-core CPU.
SIZES = {"cpu": 1024, "cuda": 8192}
DTYPES = {"cpu": ("fp32", "bf16", "fp64"), "cuda": ("fp32", "tf32", "bf16", "fp16", "fp64")}
_TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                 "fp64": torch.float64}


def calibrate(device: str = "cpu", threads: int | None = None, min_run_time: float = 0.25,
              size: int | None = None, dtypes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Measure the achieved FLOP/s of an ``n x n @ n x n`` matmul per dtype on ``device``.

    Each dtype is timed with ``torch.utils.benchmark.Timer.blocked_autorange`` (CUDA synchronised);
    the value is ``2 n^3 / fastest block time`` (``median_value`` uses the median block). This is the *measured* peak the roofline and "fraction
    of peak" columns divide by: a datasheet number would flatter or shame the cases unfairly.
    A dtype the device cannot run is absent with its reason, never zero.

    Returns ``{"device", "size", "threads", "metrics": {dtype: {value, unit, n, samples}},
    "absent": {dtype: reason}, "seconds"}``.
    """
    t_start = time.perf_counter()
    n = size or SIZES.get(device, 1024)
    threads = threads or torch.get_num_threads()
    metrics: dict[str, dict[str, Any]] = {}
    absent: dict[str, str] = {}
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    for name in dtypes or DTYPES.get(device, ("fp32",)):
        try:
            if device == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            a = torch.randn(n, n, device=device).to(_TORCH_DTYPES[name])
            b = torch.randn(n, n, device=device).to(_TORCH_DTYPES[name])
            a @ b  # warm: BLAS handles, kernel selection
            t = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=threads,
                                label="machine_peak", description=name)
            m = t.blocked_autorange(min_run_time=min_run_time)
            # A ceiling is the best the machine showed (fastest block); the median is kept beside it,
            # since on a shared machine the median block can be a contended one.
            metrics[name] = {"value": 2.0 * n ** 3 / min(m.times), "unit": "FLOP/s", "n": len(m.times),
                             "median_value": 2.0 * n ** 3 / m.median, "samples": [2.0 * n ** 3 / x for x in m.times]}
            del a, b
        except (RuntimeError, TypeError) as e:
            absent[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
    if device == "cuda":
        torch.cuda.empty_cache()  # the parent must not sit on GEMM buffers while workers run cases
    return {"device": device, "size": n, "threads": threads, "metrics": metrics, "absent": absent,
            "seconds": time.perf_counter() - t_start}


def peak_for(machine_peak: dict[str, Any] | None, precision: str) -> float | None:
    """The calibrated peak FLOP/s that bounds a case of ``precision`` (fp32 for unknown), or None."""
    if not machine_peak:
        return None
    m = machine_peak.get("metrics", {})
    for key in (precision, "fp32"):
        if key in m:
            return float(m[key]["value"])
    return None
