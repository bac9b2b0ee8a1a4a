"""Workload: a Case turned into one callable step, the only place where the Case's knobs are applied.

Knobs applied here, each in one place:

- precision: fp32 / fp64 parameters, bf16 autocast, fp16 autocast + GradScaler (CUDA), TF32 (CUDA);
- checkpoint: the model's ``checkpoint_segments`` (non-reentrant activation checkpointing);
- channels_last: model and input memory format;
- compile: ``torch.compile(model, mode=..., dynamic=...)``;
- cudnn_benchmark: ``torch.backends.cudnn.benchmark`` (CUDA);
- grad_mode: eval + no_grad / inference_mode / grad for inference;
- dataset and DataLoader fields: a loader epoch (mode='data') or a train step that loads its batch;
- mode='fit': a train step on the case's generated training task (``sciml_bench.tasks``), with
  gradient-norm clipping when ``clip`` is set.

Values this device cannot honour raise :class:`Unsupported` (recorded as ``status="skipped"``
with the reason); nothing is silently replaced by something else. What the knobs call for measuring
once per case (compile, shape sweep, numerics, loader) is in ``sciml_bench.measure.probes``.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sciml_bench.cases import Case
from sciml_bench.errors import Unsupported
from sciml_bench.models import create_model, forward, get_model_spec, to_device
from sciml_bench.tasks import get_task

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "tf32": torch.float32,
          "bf16": torch.float32, "fp16": torch.float32}  # parameter dtype; bf16/fp16 are autocast
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_KW = {"default": None, "reduce-overhead": "reduce-overhead", "max-autotune": "max-autotune"}
MAX_WORKERS_ENV = "SCIML_BENCH_MAX_WORKERS"  # cap on DataLoader num_workers (cases above it are skipped)
EPOCH_BATCHES = 16  # batches per generated dataset epoch
PHASES = ("data", "h2d", "forward", "loss", "backward", "optimizer")  # a step's phases, in order
_NULL = contextlib.nullcontext()


def mark_phase(name: str):
    """The default phase mark: a ``record_function`` range while a profiler records, else nothing.

    An unobserved ``record_function`` still costs several microseconds (about 7 us per range on a
    2-core CPU, a few percent of a small model's step), so outside a profiler the mark is a shared
    no-op context; checking whether a profiler is on costs well under 0.1 us.
    """
    return torch.profiler.record_function(name) if torch.autograd._profiler_enabled() else _NULL


@dataclass
class Workload:
    """A built case: ``step()`` runs one train step (forward, loss, backward, optimizer), one
    inference forward, or (mode='data') fetches one batch from the DataLoader. ``last_loss`` holds
    the latest loss tensor (never synced inside the step)."""

    case: Case
    model: nn.Module | None
    step: Callable[[], None]
    device: torch.device
    inputs: Any
    targets: Any
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    loader: torch.utils.data.DataLoader | None = None
    last_loss: torch.Tensor | None = field(default=None, repr=False)
    data_wait_s: float = 0.0  # host time spent waiting for the loader's next batch (loaded train steps)
    clipped: Any = field(default=0, repr=False)  # steps whose gradient norm was clipped (a tensor: no sync)
    cleanup: Any = field(default=None, repr=False)  # keeps a dataset's temporary directory alive
    # mark(name) -> context manager around each phase of a step (PHASES, plus "compile" around the
    # first compiled call); the profiling pass swaps in its own clock
    mark: Callable[[str], Any] = field(default=mark_phase, repr=False)

    def load(self, inputs: Any, targets: Any) -> None:
        """Make (inputs, targets) the next step's batch, moved and cast as the sample batch was
        (fixed-budget training feeds its minibatches through here)."""
        mf = torch.channels_last if self.case.channels_last else None
        self.inputs = to_device(inputs, self.device, DTYPES[self.case.precision], mf)
        self.targets = to_device(targets, self.device, DTYPES[self.case.precision])

    @property
    def samples_per_step(self) -> int:
        return self.case.batch_size

    def state_tensors(self) -> list[torch.Tensor]:
        """Tensors that live across steps: parameters, gradients, buffers, optimizer state, batch."""
        out: list[torch.Tensor] = []
        if self.model is not None:
            out += [p for p in self.model.parameters()]
            out += [p.grad for p in self.model.parameters() if p.grad is not None]
            out += list(self.model.buffers())
        if self.optimizer is not None:
            out += [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        for batch in (self.inputs, self.targets):
            if batch is not None:
                out += list(batch) if isinstance(batch, (tuple, list)) else [batch]
        return out


def check_device(case: Case) -> torch.device:
    """The case's torch device, or Unsupported with the reason when this machine lacks it."""
    if case.device == "cuda" and not torch.cuda.is_available():
        raise Unsupported("device cuda requested but CUDA is not available on this machine")
    if case.device == "cpu":
        if case.precision == "fp16":
            raise Unsupported("fp16 autocast with GradScaler needs CUDA")
        if case.precision == "tf32":
            raise Unsupported("TF32 is a CUDA matmul/cuDNN mode (Ampere or newer)")
        if case.cudnn_benchmark:
            raise Unsupported("cudnn.benchmark autotunes cuDNN convolutions; it needs CUDA")
        if case.compile == "reduce-overhead":
            raise Unsupported("compile mode reduce-overhead works through CUDA graphs; it needs CUDA")
        if case.compile == "max-autotune":
            raise Unsupported("compile mode max-autotune autotunes GPU kernels (Triton/CUDA graphs); it needs CUDA")
        if case.pin_memory:
            raise Unsupported("pin_memory pages host memory for asynchronous host-to-device copies; "
                              "it needs a CUDA device (the case runs on cpu)")
    elif case.precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise Unsupported("bf16 is not supported by this GPU")
    elif case.precision == "tf32" and torch.cuda.get_device_capability()[0] < 8:
        raise Unsupported("TF32 needs an Ampere (sm_80) or newer GPU")
    cap = max_workers()
    if cap is not None and case.num_workers > cap:
        raise Unsupported(f"num_workers={case.num_workers} is above the cap {MAX_WORKERS_ENV}={cap}")
    return torch.device(case.device)


def max_workers() -> int | None:
    """The user's cap on DataLoader workers (env ``SCIML_BENCH_MAX_WORKERS``), or None."""
    text = os.environ.get(MAX_WORKERS_ENV, "").strip()
    return int(text) if text.isdigit() else None


def set_backend_flags(case: Case) -> None:
    """Set the process-wide TF32 and cudnn.benchmark flags to the case's values."""
    # Explicit in both directions: fp32 must mean true fp32, since cuDNN allows TF32 by default.
    tf32 = case.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.benchmark = case.cudnn_benchmark


def _make_optimizer(case: Case, params) -> torch.optim.Optimizer:
    if case.optimizer == "sgd":
        return torch.optim.SGD(params, lr=case.lr, momentum=0.9)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[case.optimizer](params, lr=case.lr)


def _batches(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """Endless batches: a new epoch (a new iterator, and new workers unless persistent) at each end."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler: a new shuffle per epoch
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def build_workload(case: Case, reset: bool = True) -> Workload:
    """Build model, batch (or DataLoader) and step for ``case`` on its device.

    Raises Unsupported (recorded as skipped) when the device cannot run the case, e.g. fp16
    GradScaler training, TF32, cudnn.benchmark or pin_memory on a CPU. Nothing is substituted
    silently. Compilation happens lazily, in the first call of ``step``. A compiled case resets
    dynamo first (its counters and caches belong to the case alone); ``reset=False`` for a second
    copy built beside a case's own workload, whose compiled code a reset would throw away (it
    would recompile inside its timed rounds).
    """
    device = check_device(case)
    if case.ddp_ranks:
        import torch.distributed as dist

        if not dist.is_initialized():  # e.g. asv or pytest-benchmark timing one process
            raise Unsupported("ddp_ranks > 0 runs on torchrun ranks (sciml-bench run); this front end times "
                              "one process")
    set_backend_flags(case)
    torch.manual_seed(case.seed)
    spec = get_model_spec(case.model)
    dtype = DTYPES[case.precision]
    memory_format = torch.channels_last if case.channels_last else None

    loader = cleanup = None
    if case.dataset is not None:
        from sciml_bench.data import make_dataset, make_loader

        n = case.batch_size * EPOCH_BATCHES
        dataset, cleanup = make_dataset(case.dataset, spec.sample_batch(n, "cpu", torch.float32, seed=case.seed,
                                                                        **case.knobs), n, case.seed)
        if case.num_workers:
            _allow_children()
        sampler = None
        if case.ddp_ranks:  # each rank loads its own 1/N of every epoch
            sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=case.seed, drop_last=True)
        loader = make_loader(dataset, case.batch_size, case.num_workers, case.pin_memory,
                             case.persistent_workers, case.prefetch_factor, case.seed, sampler=sampler)

    if case.mode == "data":
        wl = Workload(case, None, lambda: None, device, None, None, loader=loader, cleanup=cleanup)
        batches = _batches(loader)

        def fetch() -> None:  # one batch, delivered on the case's device (the copy is part of loading)
            with wl.mark("data"):
                batch = next(batches)
            with wl.mark("h2d"):
                wl.inputs, wl.targets = to_device(batch, device, dtype, non_blocking=case.pin_memory)

        wl.step = fetch
        return wl

    task = None
    if case.mode == "fit":  # the training task fixes the data, and any input size the model must match
        task = get_task(case.model)
    model = create_model(case.model, model_args=task.model_args if task else None,
                         **case.knobs).to(device=device, dtype=dtype)
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    if case.checkpoint:
        blocks = getattr(model, "blocks", None)
        if isinstance(blocks, nn.Sequential) and case.checkpoint > len(blocks):
            raise ValueError(f"checkpoint={case.checkpoint} segments exceeds {case.model}'s {len(blocks)} blocks")
        if not isinstance(blocks, nn.Sequential) and case.checkpoint != 1:
            # U-Net / DenseNet / FNO checkpoint each block (on or off); a segment count would be ignored
            raise ValueError(f"{case.model} checkpoints each of its blocks, on or off: use checkpoint=1, "
                             f"not {case.checkpoint}")
        model.checkpoint_segments = case.checkpoint
    if case.ddp_ranks:  # inside a torchrun rank (sciml_bench.ranks); batch_size is per rank
        from torch.nn.parallel import DistributedDataParallel

        # its constructor broadcasts rank 0's parameters
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if task is not None:
        inputs, targets = task.sample(case.batch_size, device, dtype, case.seed, spec.merged(case.knobs))
    else:
        inputs, targets = spec.sample_batch(case.batch_size, device, dtype, seed=case.seed, **case.knobs)
    inputs = to_device(inputs, device, dtype, memory_format)
    eager = model
    if case.compile != "none":
        if reset:
            dynamo = torch_dynamo()
            dynamo.reset()  # counters and caches belong to this case alone
            dynamo.utils.counters.clear()
        model = torch.compile(model, mode=COMPILE_KW[case.compile], dynamic=case.dynamic)

    amp_dtype = AUTOCAST.get(case.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    wl = Workload(case, eager, lambda: None, device, inputs, targets, loader=loader, cleanup=cleanup)

    if case.mode in ("train", "fit"):
        eager.train()
        wl.optimizer = opt = _make_optimizer(case, eager.parameters())
        wl.scaler = scaler = torch.amp.GradScaler(device.type) if case.precision == "fp16" else None
        batches = _batches(loader) if loader is not None else None

        def clip() -> None:
            if case.clip is not None:
                norm = nn.utils.clip_grad_norm_(eager.parameters(), case.clip)
                wl.clipped = wl.clipped + (norm > case.clip)  # stays on the device: no sync inside the step

        def step() -> None:
            mark = wl.mark
            if batches is not None:
                t0 = time.perf_counter()
                with mark("data"):
                    batch = next(batches)
                # the loader's wait alone: a copy from pageable memory also waits for the GPU's queued work
                # (the last step's kernels), which is compute, not a stall
                wl.data_wait_s += time.perf_counter() - t0
                with mark("h2d"):
                    wl.inputs, wl.targets = to_device(batch, device, dtype, memory_format, case.pin_memory)
            with mark("optimizer"):
                opt.zero_grad(set_to_none=True)
            with mark("forward"), autocast():  # the zoo's loss functions call the model: forward + loss
                loss = spec.loss(model, wl.inputs, wl.targets)
            if scaler is not None:
                with mark("backward"):
                    scaler.scale(loss).backward()
                with mark("optimizer"):
                    if case.clip is not None:
                        scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
                        clip()
                    scaler.step(opt)
                    scaler.update()
            else:
                with mark("backward"):
                    loss.backward()
                with mark("optimizer"):
                    clip()
                    opt.step()
            wl.last_loss = loss.detach()
    else:
        eager.eval()
        grad_ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
                    "grad": torch.enable_grad}[case.grad_mode]

        def step() -> None:
            with wl.mark("forward"), grad_ctx(), autocast():
                forward(model, wl.inputs)

    wl.step = _mark_compile(wl, step) if case.compile != "none" else step
    return wl


def _mark_compile(wl: Workload, step: Callable[[], None]) -> Callable[[], None]:
    """``step`` with its first call (where torch.compile compiles) inside a ``compile`` mark. Under CUDA graphs
    (reduce-overhead, max-autotune) each call first marks a new step, as torch's docs advise: torch starts one
    by itself unless a backward is pending, and an inference step with grad enabled leaves its outputs
    pending a backward that never comes, so it would never replay its graph (the fast path)."""
    first = [True]
    graphs = wl.case.compile in ("reduce-overhead", "max-autotune")

    def compiled_step() -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if first[0]:
            first[0] = False
            with wl.mark("compile"):
                return step()
        return step()

    return compiled_step


def absent_phases(case: Case) -> dict[str, str]:
    """Phases a case's step does not have, each with the reason (the record's ``absent`` entries)."""
    out: dict[str, str] = {}
    if case.dataset is None:
        out["data"] = "no DataLoader: the batch is built on the device once, before timing"
        out["h2d"] = "no DataLoader: the batch already lives on the device (no copy per step)"
    if case.mode == "data":
        out.update(forward="mode='data' runs no model", loss="mode='data' runs no model",
                   backward="mode='data' runs no model", optimizer="mode='data' runs no model")
    elif case.mode == "infer":
        out.update(loss="an inference step computes no loss", backward="an inference step has no backward",
                   optimizer="an inference step has no optimizer")
    else:
        out["loss"] = ("the zoo's loss functions call the model themselves, so the loss is timed inside "
                       "the forward phase")
    return out


def release() -> None:
    """Free the workloads dropped so far: a Workload's step closes over it, a cycle that reference counting
    alone never frees (its parameters, optimizer state, batch and DataLoader would stay); then CUDA's cache."""
    import gc

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def torch_dynamo():
    """``torch._dynamo`` (imported on first use: it costs seconds)."""
    import importlib

    return importlib.import_module("torch._dynamo")


def _allow_children() -> None:
    """Let this process start DataLoader workers even when it is itself a daemonic worker.

    The runner's case workers are daemonic (they die with the parent); multiprocessing refuses
    children of daemonic processes. DataLoader workers watch their parent and exit when it dies,
    so clearing the flag in the case worker is safe.
    """
    import multiprocessing

    proc = multiprocessing.current_process()
    if proc.daemon:
        proc._config["daemon"] = False  # noqa: SLF001  (no public API for this)
