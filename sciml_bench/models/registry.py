"""The zoo's registry: ``register_model``, ``create_model``, ``list_models``, ``get_model_spec``.

Each entry knows its task, its default sizes, the knobs it accepts, how to make a sample
batch and how to compute its loss, so one generic workload can train or run any of them. The
family modules register their entries when the ``sciml_bench.models`` package is imported (which
any import of this module does first); user plugins (``SCIML_BENCH_PLUGINS``) on first lookup.
"""
from __future__ import annotations

import fnmatch
import importlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sciml_bench.errors import UsageError, unknown

TASKS = ("classification", "regression", "sequence", "operator", "physics", "reconstruction")

# Knobs handled outside the model constructor (by create_model or the workload).
WORKLOAD_KNOBS = frozenset({"init", "checkpoint", "channels_last"})

Batch = tuple[Any, Any]  # (inputs, targets); inputs may be a tuple of tensors


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about one registered model."""

    name: str
    fn: Callable[..., nn.Module]
    family: str
    task: str
    defaults: dict[str, Any]
    knobs: frozenset[str]
    batch: Callable[..., Batch]  # batch(batch_size, generator, **merged_knobs) -> (inputs, targets) on CPU
    loss: Callable[[nn.Module, Any, Any], torch.Tensor]
    description: str = ""
    hidden: bool = False  # test-only entries (fault models) stay out of listings
    tags: tuple[str, ...] = field(default=())

    def merged(self, knobs: dict[str, Any]) -> dict[str, Any]:
        """Defaults overridden by the non-None user knobs."""
        return dict(self.defaults, **{k: v for k, v in knobs.items() if v is not None})

    def check_knobs(self, knobs: dict[str, Any]) -> None:
        """Raise UsageError naming the accepted knobs if any given knob is not accepted."""
        bad = sorted(k for k, v in knobs.items() if v is not None and v is not False and v != 0
                     and k not in self.knobs and not (k == "init" and v == "default"))
        if bad:
            raise UsageError(f"model {self.name!r} does not accept knob(s) {', '.join(bad)}; "
                             f"it accepts: {', '.join(sorted(self.knobs)) or 'none'}")

    def sample_batch(self, batch_size: int, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, seed: int = 0, **knobs: Any) -> Batch:
        """A seeded sample batch on ``device``; floating tensors cast to ``dtype``, integer targets kept."""
        g = torch.Generator().manual_seed(seed)
        inputs, targets = self.batch(batch_size, g, **self.merged(knobs))
        return to_device(inputs, device, dtype), to_device(targets, device, dtype)


def to_device(x: Any, device: str | torch.device, dtype: torch.dtype,
              memory_format: torch.memory_format | None = None, non_blocking: bool = False) -> Any:
    """Move a (possibly nested) batch to ``device``: floating tensors cast to ``dtype`` (integer ones
    keep theirs), 4-D floating tensors put in ``memory_format`` when given; lists become tuples, the
    form ``forward`` unpacks (a DataLoader collates a sample's tuple into a list)."""
    if isinstance(x, (tuple, list)):
        return tuple(to_device(t, device, dtype, memory_format, non_blocking) for t in x)
    x = x.to(device=device, dtype=dtype if x.is_floating_point() else None, non_blocking=non_blocking)
    if memory_format is not None and x.dim() == 4 and x.is_floating_point():
        x = x.contiguous(memory_format=memory_format)
    return x


def forward(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on a sample batch's inputs (a tensor or a tuple of tensors)."""
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)


def cross_entropy(model: nn.Module, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Classification loss: logits (B, C) or (B, C, ...) against integer targets."""
    return F.cross_entropy(forward(model, inputs).float(), targets)


def mse(model: nn.Module, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Regression / reconstruction loss, computed in fp32 for stable numerics under autocast."""
    return F.mse_loss(forward(model, inputs).float(), targets.float())


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str | None = None, *, family: str, task: str, batch: Callable[..., Batch],
                   loss: Callable[[nn.Module, Any, Any], torch.Tensor] = cross_entropy,
                   defaults: dict[str, Any] | None = None, knobs: Iterable[str] = (),
                   description: str = "", hidden: bool = False, tags: Iterable[str] = ()):
    """Decorator registering a model factory. ``knobs`` are the keyword arguments it accepts
    plus any of ``WORKLOAD_KNOBS`` it supports; ``init`` is accepted by every model."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[key] = ModelSpec(key, fn, family, task, dict(defaults or {}),
                                   frozenset(knobs) | {"init"}, batch, loss, doc, hidden, tuple(tags))
        return fn

    return deco


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _load_plugins() -> None:
    """Import the user's plugin modules (``SCIML_BENCH_PLUGINS=mod1,mod2``), which register their entries."""
    for mod in filter(None, os.environ.get("SCIML_BENCH_PLUGINS", "").split(",")):
        try:
            importlib.import_module(mod.strip())
        except (Exception, SystemExit) as e:  # noqa: BLE001  (any failure of user code is the user's error)
            msg = " ".join(str(e).split())[:300]
            raise UsageError(f"cannot import plugin module {mod.strip()!r} from SCIML_BENCH_PLUGINS: "
                             f"{type(e).__name__}: {msg}") from None


def list_models(pattern: str | Iterable[str] = "*", exclude_filters: Iterable[str] = (),
                include_hidden: bool = False) -> list[str]:
    """Registered names matching glob ``pattern`` (fnmatch), naturally sorted."""
    _load_plugins()
    pats = [pattern] if isinstance(pattern, str) else list(pattern)
    names = [n for n, s in _REGISTRY.items() if include_hidden or not s.hidden]
    names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in pats)]
    names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in exclude_filters)]
    return sorted(names, key=_natural_key)


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a registered model; UsageError with close matches if unknown."""
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown("model", name, list_models()) from None


def create_model(name: str, model_args: dict[str, Any] | None = None, **knobs: Any) -> nn.Module:
    """Build model ``name`` with knobs (``None`` means the model's own default).

    ``model_args`` are constructor arguments fixed by a training task (e.g. ``in_features=2`` for a
    2D function); they are not user knobs, so they bypass knob validation.

    Raises UsageError for an unknown name or a knob the model does not accept. The lookup
    alone is guarded: an exception inside a constructor is a bug and propagates as is.
    """
    from sciml_bench.models.layers import init_weights

    spec = get_model_spec(name)
    spec.check_knobs(knobs)
    merged = spec.merged(knobs)
    init = merged.pop("init", "default")
    model = spec.fn(**{k: v for k, v in merged.items() if k not in WORKLOAD_KNOBS}, **(model_args or {}))
    init_weights(model, init)
    return model


def param_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def default_param_count(name: str) -> int:
    """Trainable parameters of ``name`` at its default knobs, built on the meta device: shapes only, no
    memory or weight init, so listing the whole zoo takes seconds instead of building every model."""
    with torch.device("meta"):
        return param_count(create_model(name))
