"""The anchor: a fixed numpy workload the run times beside every case, in the same rounds.

Its workload does not depend on the code under test (numpy, no torch op and no sciml_bench model;
only the timer is torch.utils.benchmark's, as for every case), so across runs its time moves only
with the machine (clock, thermal state, memory bandwidth, a neighbour). A case's time divided
by the anchor time of the same round (``results.anchored_samples``) then compares across runs where
raw seconds do not. It is a BLAS GEMM plus a memory copy, the two resources most cases lean on.
"""
from __future__ import annotations

from typing import Any

import numpy as np

VERSION = 1  # change when the workload changes: anchored values of different versions do not compare
GEMM_N = 160  # float64 GEMM of n x n (about 8 MFLOP): compute-bound, on one BLAS thread (see time_block)
COPY_BYTES = 4 * 2 ** 20  # a memory copy larger than L2, so bandwidth shows
BLOCK_TIME = 0.05  # seconds per anchor block: one block per round of every study chunk

DESCRIPTION = f"numpy float64 GEMM {GEMM_N}x{GEMM_N} + {COPY_BYTES // 2 ** 20} MiB copy (anchor v{VERSION})"


def make_step():
    """The anchor step (fixed data, seeded) as a zero-argument callable."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((GEMM_N, GEMM_N)), rng.standard_normal((GEMM_N, GEMM_N))
    out = np.empty((GEMM_N, GEMM_N))
    src, dst = np.ones(COPY_BYTES // 8), np.empty(COPY_BYTES // 8)

    def step() -> None:
        np.matmul(a, b, out=out)
        np.copyto(dst, src)

    return step


def time_block(step, seconds: float = BLOCK_TIME) -> float:
    """The anchor's per-call time (median of one ``timing.time_block``), on one BLAS thread.

    One thread: OpenBLAS's worker threads spin for a while after a parallel call, which would
    steal the cores from the case timed next in the round (measured here: 0.1 s of CPU in the
    0.3 s after a 2-thread anchor block, none with one thread)."""
    import statistics

    from threadpoolctl import threadpool_limits

    from sciml_bench.measure.timing import time_block as timed

    with threadpool_limits(1, user_api="blas"):
        return statistics.median(timed(step, seconds, 1, "anchor")["times"])


def header() -> dict[str, Any]:
    """What the run header records about its anchor."""
    return {"description": DESCRIPTION, "version": VERSION, "block_time": BLOCK_TIME,
            "numpy": np.__version__, "blas_threads": 1}
