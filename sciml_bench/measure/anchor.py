"""The anchor: a fixed numpy workload the run times beside every case, in the same rounds.

Its workload does not depend on the code under test (numpy, no torch op and no sciml_bench model;
only the timer is torch.utils.benchmark's, as for every case), so across runs its time moves only
with the machine (clock, thermal state, memory bandwidth, a neighbour). A case's time divided
by the anchor time of the same round (``results.anchored_samples``) then compares across runs where
raw seconds do not. It is a BLAS GEMM plus a memory copy, the two resources most cases lean on.
"""
from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from sciml_bench.measure.timing import time_fixed

# Change when the workload or how it is timed changes: anchored values of different versions do not
# compare. v2: fixed-size measurements instead of blocked_autorange (see Anchor).
VERSION = 2
GEMM_N = 160  # float64 GEMM of n x n (about 8 MFLOP): compute-bound, on one BLAS thread (see time_block)
COPY_BYTES = 4 * 2 ** 20  # a memory copy larger than L2, so bandwidth shows
BLOCK_TIME = 0.05  # seconds per anchor block: one block per round of every study chunk
REPEATS = 5  # measurements per block; the block's value is their median

DESCRIPTION = f"numpy float64 GEMM {GEMM_N}x{GEMM_N} + {COPY_BYTES // 2 ** 20} MiB copy (anchor v{VERSION})"


class Anchor:
    """The anchor workload (fixed data, seeded), sized once so that one block takes ~BLOCK_TIME.

    A block is ``REPEATS`` measurements of a fixed number of calls (``timing.time_fixed``), not a
    ``blocked_autorange``: that sizes its blocks to make the timer's own overhead 1e-4 of a
    measurement, which for this 0.3 ms step meant 1000-call blocks, ~0.6 s a round where 0.05 s
    was meant (12x; measured on 2 cores), in every round of every study chunk.

    One BLAS thread: OpenBLAS's worker threads spin for a while after a parallel call, which would
    steal the cores from the case timed next in the round (measured here: 0.1 s of CPU in the
    0.3 s after a 2-thread anchor block, none with one thread).
    """

    def __init__(self, seconds: float = BLOCK_TIME):
        rng = np.random.default_rng(0)
        self.a, self.b = rng.standard_normal((GEMM_N, GEMM_N)), rng.standard_normal((GEMM_N, GEMM_N))
        self.out = np.empty((GEMM_N, GEMM_N))
        self.src, self.dst = np.ones(COPY_BYTES // 8), np.empty(COPY_BYTES // 8)
        with self._one_thread():
            per_call = min(time_fixed(self.step, 5, 3, 1, "anchor"))  # min: a preempted sizing would shrink blocks
        self.number = max(1, round(seconds / REPEATS / per_call))

    def step(self) -> None:
        np.matmul(self.a, self.b, out=self.out)
        np.copyto(self.dst, self.src)

    @staticmethod
    def _one_thread():
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")

    def time_block(self) -> float:
        """The anchor's per-call time now: the median of one block's measurements."""
        with self._one_thread():
            return statistics.median(time_fixed(self.step, self.number, REPEATS, 1, "anchor"))


def header() -> dict[str, Any]:
    """What the run header records about its anchor."""
    return {"description": DESCRIPTION, "version": VERSION, "block_time": BLOCK_TIME,
            "repeats": REPEATS, "numpy": np.__version__, "blas_threads": 1}
