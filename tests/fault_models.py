"""Test-only fault models, loaded as a plugin (SCIML_BENCH_PLUGINS=tests.fault_models)."""
import ctypes
import os
import time

import torch
from torch import nn

from sciml_bench.models import mse, register_model


class Fault(nn.Module):
    """A linear model whose forward fails in a chosen way."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.fc = kind, nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "raise":
            raise RuntimeError("planted fault")
        if self.kind == "rank1" and os.environ.get("RANK") == "1":  # one DDP rank fails, its peers wait
            raise RuntimeError("planted fault on rank 1")
        if self.kind == "abort":
            os.abort()
        if self.kind == "segfault":
            ctypes.string_at(0)
        if self.kind == "hang":
            time.sleep(3600)
        if self.kind == "oom":
            torch.empty(2 ** 62, dtype=torch.uint8)  # 4 EiB: the CPU allocator refuses
        return self.fc(x)


def _batch(batch_size, g, **_):
    return torch.randn(batch_size, 4, generator=g), torch.randn(batch_size, 1, generator=g)


for _kind in ("raise", "abort", "segfault", "hang", "oom", "rank1"):
    register_model(f"fault_{_kind}", family="test", task="regression", batch=_batch, loss=mse, hidden=True,
                   description=f"test fault: {_kind}")(lambda kind=_kind: Fault(kind))
