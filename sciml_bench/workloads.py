"""Workload: a Case turned into one callable step, the only place where the Case's knobs are applied."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sciml_bench.cases import Case
from sciml_bench.errors import Unsupported
from sciml_bench.models import create_model, forward, get_model_spec

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "tf32": torch.float32,
          "bf16": torch.float32, "fp16": torch.float32}  # parameter dtype; bf16/fp16 are autocast
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Workload:
    """A built case: ``step()`` runs one train step (forward, loss, backward, optimizer) or one
    inference forward. ``last_loss`` holds the latest loss tensor (never synced inside the step)."""

    case: Case
    model: nn.Module
    step: Callable[[], None]
    device: torch.device
    inputs: Any
    targets: Any
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    last_loss: torch.Tensor | None = field(default=None, repr=False)

    @property
    def samples_per_step(self) -> int:
        return self.case.batch_size

    def state_tensors(self) -> list[torch.Tensor]:
        """Tensors that live across steps: parameters, gradients, buffers, optimizer state, batch."""
        out = [p for p in self.model.parameters()] + [p.grad for p in self.model.parameters() if p.grad is not None]
        out += list(self.model.buffers())
        if self.optimizer is not None:
            out += [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        for batch in (self.inputs, self.targets):
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
    elif case.precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise Unsupported("bf16 is not supported by this GPU")
    elif case.precision == "tf32" and torch.cuda.get_device_capability()[0] < 8:
        raise Unsupported("TF32 needs an Ampere (sm_80) or newer GPU")
    return torch.device(case.device)


def _set_backend_flags(case: Case) -> None:
    # Explicit in both directions: fp32 must mean true fp32, since cuDNN allows TF32 by default.
    tf32 = case.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def _make_optimizer(case: Case, params) -> torch.optim.Optimizer:
    if case.optimizer == "sgd":
        return torch.optim.SGD(params, lr=case.lr, momentum=0.9)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[case.optimizer](params, lr=case.lr)


def build_workload(case: Case) -> Workload:
    """Build model, batch and step for ``case`` on its device.

    Raises Unsupported (recorded as skipped) when the device cannot run the case, e.g. fp16
    GradScaler training or TF32 on a CPU. Nothing is substituted silently.
    """
    device = check_device(case)
    _set_backend_flags(case)
    torch.manual_seed(case.seed)
    spec = get_model_spec(case.model)
    dtype = DTYPES[case.precision]
    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format

    model = create_model(case.model, **case.knobs).to(device=device, dtype=dtype, memory_format=memory_format)
    if case.checkpoint:
        model.checkpoint_segments = case.checkpoint
    inputs, targets = spec.sample_batch(case.batch_size, device, dtype, seed=case.seed, **case.knobs)
    if case.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)

    amp_dtype = AUTOCAST.get(case.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    wl = Workload(case, model, lambda: None, device, inputs, targets)

    if case.mode == "train":
        model.train()
        wl.optimizer = opt = _make_optimizer(case, model.parameters())
        wl.scaler = scaler = torch.amp.GradScaler(device.type) if case.precision == "fp16" else None

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = spec.loss(model, inputs, targets)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            wl.last_loss = loss.detach()
    else:
        model.eval()
        grad_ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
                    "grad": torch.enable_grad}[case.grad_mode]

        def step() -> None:
            with grad_ctx(), autocast():
                forward(model, inputs)

    wl.step = step
    return wl
