"""pytest-benchmark plumbing for the micro-benchmarks: cases from the studies, a CUDA-synchronizing timer.

Run with ``pytest benchmarks --benchmark-only``. ``SCIML_BENCH_MICRO_SUITE`` (smoke | quick | full
or a TOML path; default quick) names the suite whose studies give each micro-benchmark its values,
sizes and group; ``SCIML_BENCH_MICRO_DEVICE`` (auto | cpu | cuda; default auto) its device.
"""
from __future__ import annotations

import os

# torch.cuda.is_available() through NVML: choosing a device must not initialise CUDA by itself.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from sciml_bench.cases import Case, load_suite, make_case  # noqa: E402
from sciml_bench.measure.flops import flop_metrics  # noqa: E402

SUITE = os.environ.get("SCIML_BENCH_MICRO_SUITE", "quick")
DEVICE = os.environ.get("SCIML_BENCH_MICRO_DEVICE", "auto")


def micro_device() -> str:
    """The device the micro-benchmarks run on (auto: CUDA when present)."""
    if DEVICE not in ("auto", "cpu", "cuda"):
        raise pytest.UsageError(f"SCIML_BENCH_MICRO_DEVICE={DEVICE!r}; expected one of: auto, cpu, cuda")
    if DEVICE == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return DEVICE


def cuda_sync_timer() -> float:
    """perf_counter after draining the CUDA queue, so a timed loop ends when the GPU work does."""
    torch.cuda.synchronize()
    return time.perf_counter()


@dataclass(frozen=True)
class MicroCase:
    """One micro-benchmark point: the study (group) it belongs to, the Case giving its sizes, a variant."""

    micro: str
    group: str
    case: Case
    variant: str

    @property
    def id(self) -> str:
        return self.variant


def micro_cases(micro: str, field: str, values: Iterable[Any], fallback: dict[str, Any],
                minimum: int = 2) -> list[MicroCase]:
    """Micro-benchmark points for ``field`` over ``values``.

    The first study of the suite whose cases cover at least ``minimum`` of ``values`` provides the points, their sizes (its base case) and the group ``"<study>/<micro>"``. With no
    such study the points are ``fallback`` with ``field`` set to each of ``values`` (the zoo's own
    table, e.g. every registered activation), grouped as ``"zoo/<micro>"``.
    """
    device = micro_device()
    values = list(values)
    for study in load_suite(SUITE).studies:
        cases = [c for c in study.cases({"device": device}) if getattr(c, field) in values]
        picked = {getattr(c, field): c for c in reversed(cases)}  # first case per value
        if len(picked) >= minimum:
            return [MicroCase(micro, f"{study.name}/{micro}", picked[v], str(v)) for v in values if v in picked]
    return [MicroCase(micro, f"zoo/{micro}", make_case(dict(fallback, device=device, **{field: v})), str(v))
            for v in values]


def params(points: list[MicroCase]):
    """pytest parameters (ids = the variants) for ``points``."""
    return [pytest.param(p, id=p.id) for p in points]


@pytest.fixture
def micro(benchmark):
    """Run a micro-benchmark: ``micro(point, fn, tensors...)`` times ``fn()`` with the standard fixture.

    When the point lives on a GPU the fixture's timer synchronizes CUDA at every reading, so a
    timed loop ends when the queued kernels do. ``extra_info`` carries the study, the variant,
    the Case fields, the FLOPs of one call (FlopCounterMode; None with ``flops_absent`` when it
    cannot count the call's ops, ``flops_uncounted_ops`` when the count is a lower bound) and the device.
    """
    def run(point: MicroCase, fn: Callable[[], object]) -> object:
        benchmark.group = point.group
        fn()  # lazy init (cuBLAS handles, oneDNN primitives) stays out of the calibration
        if point.case.device == "cuda":
            torch.cuda.synchronize()
            benchmark._timer = cuda_sync_timer  # the fixture's timer hook (pytest-benchmark has no public one)
        info = benchmark.extra_info
        info.update(study=point.group.split("/")[0], micro=point.micro, variant=point.variant,
                    case=point.case.to_dict(), case_id=point.case.case_id, device=point.case.device,
                    torch=torch.__version__, threads=torch.get_num_threads())
        fm, fa = flop_metrics(fn)  # no count (absent, not 0) when FlopCounterMode cannot count fn's ops
        info["flops"] = fm["flops"]["value"] if fm else None
        if fa:
            info["flops_absent"] = fa["flops"]
        elif fm["flops"]["coverage"] == "partial":  # a lower bound: say which ops it leaves out
            info["flops_uncounted_ops"] = fm["flops"]["uncounted_ops"]
        return benchmark(fn)

    return run
