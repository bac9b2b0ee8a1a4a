"""FLOPs of one step, counted by torch.utils.flop_counter (matmul, conv, attention and friends)."""
from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of ``step`` (forward and, for a train step, backward and recomputation).

    Only operators with a registered FLOP formula count; elementwise work (activations,
    optimizer updates) is not included, as in the usual "model FLOPs" convention.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())
