"""Test-only fault models, loaded as a plugin (SCIML_BENCH_PLUGINS=tests.fault_models)."""
import ctypes
import os
import signal
import sys
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
            print("fault_hang: hanging now", flush=True)  # tests wait for this to kill the run mid-hang
            time.sleep(3600)
        if self.kind == "oom":
            torch.empty(2 ** 62, dtype=torch.uint8)  # 4 EiB: the CPU allocator refuses
        if self.kind == "sigkill":  # killed, but not by the OOM killer: must not be labelled oom
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "memoryerror":
            raise MemoryError("planted MemoryError")
        if self.kind == "exit":
            sys.exit(3)
        if self.kind == "os_exit":
            print("planted last words before os._exit", flush=True)
            os._exit(7)
        if self.kind == "chatty" and not _CHATTED:  # 8 MB of output, once: the log must stay capped
            _CHATTED.append(True)
            line = b"chatter " * 15 + b"\n"
            os.write(1, b"FIRST LINE OF OUTPUT\n" + line * (8 * 2 ** 20 // len(line)) + b"LAST LINE OF OUTPUT\n")
        if self.kind == "nan":  # a diverged training run at fp32
            return self.fc(x) * float("nan")
        return self.fc(x)


_CHATTED: list = []
KINDS = ("raise", "abort", "segfault", "hang", "oom", "sigkill", "memoryerror", "exit", "os_exit", "chatty", "nan", "rank1")


def _batch(batch_size, g, **_):
    return torch.randn(batch_size, 4, generator=g), torch.randn(batch_size, 1, generator=g)


for _kind in KINDS:
    register_model(f"fault_{_kind}", family="test", task="regression", batch=_batch, loss=mse, hidden=True,
                   description=f"test fault: {_kind}")(lambda kind=_kind: Fault(kind))
