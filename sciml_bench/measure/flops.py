"""FLOPs of one step, counted by torch.utils.flop_counter, with the executed ops it has no formula for.

FlopCounterMode counts only operators with a registered formula (matmul, conv, attention, ...).
A step whose work lies elsewhere (an LSTM's fused ``mkldnn_rnn_layer``, an activation, an FFT)
would read as 0 FLOPs, and a GFLOP/s drawn from a partial count looks like a slow machine. So
the count is taken together with a dispatch-level list of every executed op that does
arithmetic the counter cannot see: a count of 0 with such ops is *absent* (not 0), and a
positive count with them is marked ``coverage: "partial"`` (a lower bound).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

# Ops that move, create or reinterpret data without arithmetic (views are recognised by schema).
_NO_ARITHMETIC = frozenset("""
    copy_ clone _to_copy contiguous detach alias lift_fresh _unsafe_view empty empty_like empty_strided
    zeros zeros_like ones ones_like full full_like fill_ zero_ new_empty new_empty_strided new_zeros
    new_ones new_full scalar_tensor arange randn rand randint randperm normal_ uniform_ bernoulli_ random_
    cat stack index index_select gather scatter scatter_ slice_backward select_backward index_put_
    constant_pad_nd split split_with_sizes unbind chunk embedding _local_scalar_dense masked_fill
    masked_fill_ where repeat flip roll set_ resize_ _pin_memory is_pinned transpose_ t_ unsqueeze_ squeeze_
    as_strided_ detach_ unsafe_split unsafe_split_with_sizes unsafe_chunk
""".split())


@dataclass
class FlopCount:
    """FlopCounterMode's total plus the arithmetic ops it had no formula for (name -> kind)."""

    value: int
    uncounted: dict[str, str] = field(default_factory=dict)  # e.g. {"relu": "elementwise"}
    uncounted_elements: int = 0  # output elements those ops produced (scale of the missing work)

    @property
    def coverage(self) -> str:
        return "partial" if self.uncounted else "complete"

    def describe(self) -> str:
        """The uncounted ops, one phrase: ``relu, mul (elementwise); mkldnn_rnn_layer``."""
        elem = sorted(k for k, v in self.uncounted.items() if v == "elementwise")
        other = sorted(k for k, v in self.uncounted.items() if v != "elementwise")
        parts = ([", ".join(elem) + " (elementwise)"] if elem else []) + ([", ".join(other)] if other else [])
        return "; ".join(parts)


def _arithmetic_op(func: Any) -> str | None:
    """'elementwise' / 'other' for an op that computes, None for views, copies and creation."""
    schema = func._schema
    if func._overloadpacket.__name__ in _NO_ARITHMETIC:
        return None
    if schema.returns and all(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns):
        return None  # a view
    return "elementwise" if torch.Tag.pointwise in func.tags else "other"


def _float_numel(out: Any) -> int:
    items = out if isinstance(out, (list, tuple)) else [out]
    return sum(t.numel() for t in items if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()))


class _Uncounted(TorchDispatchMode):
    """Records executed ops that produce floating-point results and have no FLOP formula."""

    def __init__(self, registry: dict[Any, Any]):
        super().__init__()
        self.registry = registry
        self.ops: dict[str, str] = {}
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._overloadpacket not in self.registry:
            n = _float_numel(out)
            kind = _arithmetic_op(func) if n else None
            if kind is not None:
                self.ops[func._overloadpacket.__name__] = kind
                self.elements += n
        return out


def flop_count(step: Callable[[], object]) -> FlopCount:
    """FLOPs of one call of ``step`` (forward and, for a train step, backward and recomputation).

    Returns the counter's total and the executed arithmetic ops it has no formula for, so a
    caller can tell a complete count from a lower bound and from "cannot count".
    """
    counter = FlopCounterMode(display=False)
    uncounted = _Uncounted(counter.flop_registry)
    with counter, uncounted:
        step()
    return FlopCount(int(counter.get_total_flops()), uncounted.ops, uncounted.elements)


def count_flops(step: Callable[[], object]) -> int:
    """FlopCounterMode's total for one call of ``step`` (see ``flop_count`` for what it leaves out)."""
    return flop_count(step).value


def flop_metrics(step: Callable[[], object]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(metrics, absent) for a record: ``flops`` when it can be counted, else an absent reason.

    0 counted FLOPs while ops without a formula ran means the counter cannot count this step:
    absent, never 0. A positive count with uncounted ops is kept as a lower bound, with
    ``coverage: "partial"``, the ops and the output elements they produced.
    """
    try:
        fc = flop_count(step)
    except Exception as e:  # an op without FLOP support must not lose the case's timing
        return {}, {"flops": f"FlopCounterMode failed: {type(e).__name__}: {e}"}
    if fc.value == 0 and fc.uncounted:
        return {}, {"flops": f"FlopCounterMode has no FLOP formula for the ops this step runs: {fc.describe()}"}
    m: dict[str, Any] = {"value": fc.value, "unit": "FLOP", "coverage": fc.coverage}
    if fc.uncounted:
        m.update(uncounted_ops=fc.describe(), uncounted_elements=fc.uncounted_elements)
    return {"flops": m}, {}


def flop_rate(flops: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The ``flop_rate`` metric (FLOP/s) of a ``flops`` metric; a partial count gives a lower bound."""
    m: dict[str, Any] = {"value": flops["value"] / seconds, "unit": "FLOP/s"}
    if flops.get("coverage") == "partial":
        m.update(coverage="partial", lower_bound=True, uncounted_ops=flops.get("uncounted_ops"))
    return m
