"""Test-only fault models, loaded as a plugin (SCIML_BENCH_PLUGINS=tests.fault_models).

``fault_<kind>`` fails in every forward. The phase faults fail only inside one phase, found on the
call stack, so that the case's set-up and timed rounds before it succeed: ``fault_<kind>_in_profile``
(the profile pass), ``fault_<kind>_in_fit`` (fixed-budget training), ``fault_rank1_<kind>`` (DDP rank
1 in a timed round; its peers then wait for it in a collective), and ``fault_loader_<kind>`` (in the
DataLoader worker process that loads the case's batches: ``dataset = "memmap"``, ``num_workers >= 1``)."""
import ctypes
import os
import signal
import sys
import time

import torch
from torch import nn

from sciml_bench.models import mse, register_model


# Where a phase fault fires: a frame on the stack that only that phase has.
PHASES = {
    "profile": lambda f: f.f_code.co_name == "profile_pass",
    "fit": lambda f: f.f_code.co_name == "fit_seed",
    # a DDP rank's timed round (its step-time estimate at set-up is time_fixed's default label)
    "ddp_round": lambda f: f.f_code.co_name == "time_fixed" and f.f_locals.get("label") != "step",
}
PHASE_KINDS = ("raise", "hang", "oom", "sigkill")


def _in(phase: str) -> bool:
    f = sys._getframe(1)
    while f is not None:
        if PHASES[phase](f):
            return True
        f = f.f_back
    return False


def _plant_in_loader(kind: str) -> None:
    """Make the memmap dataset's __getitem__ fail ``kind``-wise in DataLoader worker processes only
    (this case's worker is the only process that runs it; forked loader workers inherit it)."""
    from sciml_bench.data import MemmapDataset

    get = MemmapDataset.__getitem__
    if getattr(get, "planted", False):
        return

    def getitem(self, i):
        if torch.utils.data.get_worker_info() is not None:
            Fault(kind).forward(torch.zeros(1, 4))
        return get(self, i)

    getitem.planted = True
    MemmapDataset.__getitem__ = getitem


class Fault(nn.Module):
    """A linear model whose forward fails in a chosen way (``phase``: only there; ``rank``: only on that DDP
    rank; ``loader``: in the DataLoader worker processes instead)."""

    def __init__(self, kind: str, phase: str | None = None, rank: str | None = None, loader: bool = False):
        super().__init__()
        self.kind, self.fc, self.phase, self.rank = kind, nn.Linear(4, 1), phase, rank
        if loader:
            _plant_in_loader(kind)
            self.kind = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.phase and not _in(self.phase)) or (self.rank and os.environ.get("RANK") != self.rank):
            return self.fc(x)
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
KINDS = ("none", "raise", "abort", "segfault", "hang", "oom", "sigkill", "memoryerror", "exit", "os_exit", "chatty", "nan", "rank1")


def _batch(batch_size, g, **_):
    return torch.randn(batch_size, 4, generator=g), torch.randn(batch_size, 1, generator=g)


for _kind in KINDS:
    register_model(f"fault_{_kind}", family="test", task="regression", batch=_batch, loss=mse, hidden=True,
                   description=f"test fault: {_kind}")(lambda kind=_kind: Fault(kind))
for _kind in PHASE_KINDS:
    for _name, _how in ((f"fault_{_kind}_in_profile", {"phase": "profile"}), (f"fault_{_kind}_in_fit", {"phase": "fit"}),
                        (f"fault_rank1_{_kind}", {"phase": "ddp_round", "rank": "1"}),
                        (f"fault_loader_{_kind}", {"loader": True})):
        register_model(_name, family="test", task="regression", batch=_batch, loss=mse, hidden=True,
                       description=f"test fault: {_kind} {_how}")(lambda kind=_kind, how=_how: Fault(kind, **how))
