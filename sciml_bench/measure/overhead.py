"""Harness overhead: what timing a step costs by itself, to flag cases too small to time honestly."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sciml_bench.measure.timing import time_block

# A case is overhead-dominated when its median step is below OVERHEAD_FACTOR x the estimated fixed
# cost (harness call + one dispatcher round trip per aten op): then at least a third of what is
# timed is Python and dispatch, and the ratio to another case says more about op counts than about
# the work, and moves most from run to run.
OVERHEAD_FACTOR = 3.0


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active (stacks with other modes, e.g. FLOP counting)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def count_ops(step: Callable[[], object]) -> int:
    """Number of aten ops one call of ``step`` dispatches (forward and backward)."""
    with OpCounter() as c:
        step()
    return c.n


def harness_costs(num_threads: int, min_run_time: float = 0.02) -> dict[str, float]:
    """Per-call cost of the timing harness on an empty step, and of one tiny dispatched CPU op, both
    timed through the same Timer as the cases (medians of the block's measurements). On CUDA a
    launched op costs more, so the estimate is a lower bound there."""
    a = torch.ones(1)

    def op() -> None:
        torch.add(a, a)

    empty = time_block(lambda: None, min_run_time, num_threads)["times"]
    tiny = time_block(op, min_run_time, num_threads)["times"]
    return {"harness_s": float(sorted(empty)[len(empty) // 2]), "op_s": float(sorted(tiny)[len(tiny) // 2])}


def overhead_verdict(step_s: float, costs: dict[str, Any]) -> dict[str, Any]:
    """``costs`` (harness_s, op_s, ops) against the measured step: estimate and ``dominated`` flag."""
    est = costs["harness_s"] + costs.get("ops", 0) * costs["op_s"]
    dominated = step_s < OVERHEAD_FACTOR * est
    out = dict(costs, estimate_s=est, step_s=step_s, fraction=est / step_s if step_s else None,
               dominated=dominated)
    if dominated:
        out["reason"] = (f"step {step_s * 1e6:.0f} us is within {OVERHEAD_FACTOR:g}x of the fixed cost of timing it "
                         f"(~{est * 1e6:.0f} us: {costs.get('ops', 0)} ops x {costs['op_s'] * 1e6:.1f} us dispatch + "
                         f"{costs['harness_s'] * 1e6:.2f} us harness); size the case up before reading ratios")
    return out
