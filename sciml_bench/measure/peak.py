"""Machine peak calibration: best achieved FLOP/s of a large GEMM and a 3x3 convolution per dtype."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils import benchmark

# GEMM side per device: large enough to reach the BLAS's steady state, small enough that the
# whole calibration stays around a second or two on a 2-core CPU.
SIZES = {"cpu": 1024, "cuda": 8192}
# 3x3 convolution (batch, channels, side) per device. On some CPUs (e.g. AMD EPYC with MKL) oneDNN's
# convolutions run ~1.7x faster than MKL's GEMM: a GEMM-only ceiling then sits below what conv nets
# reach, and "of measured peak" exceeded 100%. The peak is the better of the two kernels.
CONV = {"cpu": (8, 128, 32), "cuda": (64, 256, 64)}
DTYPES = {"cpu": ("fp32", "bf16", "fp64"), "cuda": ("fp32", "tf32", "bf16", "fp16", "fp64")}
_TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
                 "fp64": torch.float64}


@contextlib.contextmanager
def tf32(on: bool) -> Iterator[None]:
    """TF32 tensor cores for float32 matmuls *and* convolutions (cuDNN's flag defaults to on: an fp32
    convolution would otherwise run on TF32 and lend the fp32 ceiling its speed), restored after."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def calibrate(device: str = "cpu", threads: int | None = None, min_run_time: float = 0.15,
              size: int | None = None, dtypes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Measure the achieved FLOP/s of an ``n x n @ n x n`` matmul and of a 3x3 convolution per dtype.

    The peak of a dtype is the faster of the two kernels (``kernel`` says which; ``kernels`` holds
    both). Each is timed with ``torch.utils.benchmark.Timer.blocked_autorange`` (CUDA synchronised);
    the value is its FLOPs / fastest block time (``median_value`` uses the median block). This is
    the *measured* peak the roofline and "fraction of peak" columns divide by: a datasheet number would flatter or shame the cases unfairly.
    A dtype the device cannot run is absent with its reason, never zero.

    Returns ``{"device", "size", "threads", "metrics": {dtype: {value, unit, n, kernel, kernels, samples}},
    "absent": {dtype: reason}, "seconds"}``.
    """
    t_start = time.perf_counter()
    n = size or SIZES.get(device, 1024)
    threads = threads or torch.get_num_threads()
    metrics: dict[str, dict[str, Any]] = {}
    absent: dict[str, str] = {}
    for name in dtypes or DTYPES.get(device, ("fp32",)):
        try:
            with tf32(name == "tf32") if device == "cuda" else contextlib.nullcontext():
                metrics[name] = _ceiling(device, name, n, threads, min_run_time)
        except (RuntimeError, TypeError) as e:
            absent[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if device == "cuda":
        torch.cuda.empty_cache()  # the parent must not sit on GEMM buffers while workers run cases
    return {"device": device, "size": n, "threads": threads, "metrics": metrics, "absent": absent,
            "seconds": time.perf_counter() - t_start}


def _ceiling(device: str, name: str, n: int, threads: int, min_run_time: float) -> dict[str, Any]:
    """One dtype's ceiling: the faster kernel's fastest block, the median and both kernels beside it."""
    dt = _TORCH_DTYPES[name]
    a, b = torch.randn(n, n, device=device).to(dt), torch.randn(n, n, device=device).to(dt)
    bs, ch, side = CONV.get(device, CONV["cpu"])
    x = torch.randn(bs, ch, side, side, device=device).to(dt)
    w = torch.randn(ch, ch, 3, 3, device=device).to(dt)
    kernels = {"gemm": (lambda: a @ b, 2.0 * n ** 3),
               "conv3x3": (lambda: torch.nn.functional.conv2d(x, w, padding=1),
                           2.0 * bs * ch * ch * 9 * side ** 2)}
    rates = {}
    for kernel, (fn, flop) in kernels.items():
        fn()  # warm: BLAS / oneDNN handles, kernel selection
        t = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=threads, label="machine_peak",
                            description=f"{name} {kernel}")
        m = t.blocked_autorange(min_run_time=min_run_time)
        rates[kernel] = (flop / min(m.times), flop / m.median, len(m.times), [flop / x_ for x_ in m.times])
    # A ceiling is the best the machine showed (fastest block of the faster kernel); the median
    # is kept beside it, since on a shared machine the median block can be a contended one.
    best = max(rates, key=lambda k: rates[k][0])
    return {"value": rates[best][0], "unit": "FLOP/s", "n": rates[best][2], "kernel": best,
            "median_value": rates[best][1], "samples": rates[best][3],
            "kernels": {k: v[0] for k, v in rates.items()}}


def peak_for(machine_peak: dict[str, Any] | None, precision: str) -> float | None:
    """The calibrated peak FLOP/s that bounds a case of ``precision`` (fp32 for unknown), or None."""
    if not machine_peak:
        return None
    m = machine_peak.get("metrics", {})
    for key in (precision, "fp32"):
        if key in m:
            return float(m[key]["value"])
    return None
