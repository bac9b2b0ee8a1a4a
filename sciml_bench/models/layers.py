"""Layer knobs chosen by name in one place: activations, norms, initializations, checkpointing."""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sciml_bench.errors import unknown


class XSin(nn.Module):
    """x * sin(x): a periodic activation used in physics-informed work."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sin(x)


_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": partial(nn.LeakyReLU, 0.01),
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "xsin": XSin,
}
ACTIVATIONS = tuple(_ACTS)


def get_act_layer(name: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Activation factory by name (or pass a module class / factory through)."""
    if callable(name):
        return name
    try:
        return _ACTS[name]
    except KeyError:
        raise unknown("activation", name, ACTIVATIONS) from None


def _layer_norm_conv(c: int) -> nn.Module:
    # LayerNorm over (C, *spatial) per sample, the conv equivalent of nn.LayerNorm.
    return nn.GroupNorm(1, c)


def _group_norm(c: int) -> nn.Module:
    return nn.GroupNorm(math.gcd(8, c), c)  # 8 groups; fewer when C is not divisible by 8


_NORMS: dict[str, dict[str, Callable[[int], nn.Module]]] = {
    "none": {"1d": lambda c: nn.Identity(), "2d": lambda c: nn.Identity(), "3d": lambda c: nn.Identity(),
             "seq": lambda c: nn.Identity()},
    "batch": {"1d": nn.BatchNorm1d, "2d": nn.BatchNorm2d, "3d": nn.BatchNorm3d, "seq": nn.BatchNorm1d},
    "layer": {"1d": nn.LayerNorm, "2d": _layer_norm_conv, "3d": _layer_norm_conv, "seq": _layer_norm_conv},
    "group": {"1d": _group_norm, "2d": _group_norm, "3d": _group_norm, "seq": _group_norm},
    "instance": {"2d": partial(nn.InstanceNorm2d, affine=True), "3d": partial(nn.InstanceNorm3d, affine=True),
                 "seq": partial(nn.InstanceNorm1d, affine=True)},
}
NORMS = tuple(_NORMS)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def get_norm_layer(name: str, kind: str = "2d") -> Callable[[int], nn.Module]:
    """Norm factory ``f(num_features)`` by name, for features of ``kind``:
    "1d" (B, C) vectors, "2d"/"3d" conv maps, "seq" (B, C, L) conv1d maps."""
    try:
        table = _NORMS[name]
    except KeyError:
        raise unknown("norm", name, NORMS) from None
    if kind not in table:
        raise unknown(f"norm for {kind} features", name, [n for n, t in _NORMS.items() if kind in t])
    return table[kind]


def _kaiming(fn, mode):
    return lambda w: fn(w, mode=mode, nonlinearity="relu")


_INITS: dict[str, Callable[[torch.Tensor], object] | None] = {
    "default": None,  # PyTorch's own reset_parameters
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": _kaiming(nn.init.kaiming_uniform_, "fan_in"),
    "kaiming_uniform_fan_out": _kaiming(nn.init.kaiming_uniform_, "fan_out"),
    "kaiming_normal": _kaiming(nn.init.kaiming_normal_, "fan_in"),
    "kaiming_normal_fan_out": _kaiming(nn.init.kaiming_normal_, "fan_out"),
    "orthogonal": nn.init.orthogonal_,
    "normal": partial(nn.init.normal_, mean=0.0, std=0.02),
    "zeros": nn.init.zeros_,        # failure demo: symmetric units never differentiate
    "constant": partial(nn.init.constant_, val=0.5),  # failure demo
    "lstm": None,  # handled in init_weights: xavier input, orthogonal recurrent, forget bias 1
}
INITS = tuple(_INITS)


def init_weights(model: nn.Module, name: str = "default") -> nn.Module:
    """Initialize every Linear / Conv / recurrent weight of ``model`` by the named scheme.

    Biases are zeroed for non-default schemes (the usual companion of these recipes), except
    the ``lstm`` recipe which sets the forget-gate bias to 1. Norm layers keep (1, 0).
    """
    if name not in _INITS:
        raise unknown("init", name, INITS)
    if name == "default":
        return model
    fn = _INITS[name]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                (fn or nn.init.xavier_uniform_)(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.RNNBase):
                for pname, p in m.named_parameters():
                    if pname.startswith("weight_hh") and name == "lstm":
                        for chunk in p.chunk(4 if isinstance(m, nn.LSTM) else 1, 0):
                            nn.init.orthogonal_(chunk)
                    elif pname.startswith("weight"):
                        (fn or nn.init.xavier_uniform_)(p)
                    elif pname.startswith("bias"):
                        nn.init.zeros_(p)
                        if name == "lstm" and isinstance(m, nn.LSTM):
                            h = m.hidden_size
                            p[h:2 * h].fill_(1.0 if pname.startswith("bias_ih") else 0.0)  # gates i, f, g, o
    return model


def checkpoint_seq(blocks: nn.Sequential, x: torch.Tensor, segments: int) -> torch.Tensor:
    """Run ``blocks`` on ``x``; with ``segments > 0`` and grad enabled, split them into that many
    contiguous segments and checkpoint every one (non-reentrant): each segment keeps only its
    input and recomputes its activations in backward. ``segments=1`` checkpoints the whole stack.

    Unlike ``torch.utils.checkpoint.checkpoint_sequential``, the last segment is checkpointed too,
    so ``checkpoint=1`` is not silently a no-op.
    """
    if segments <= 0 or not torch.is_grad_enabled():
        return blocks(x)
    if segments > len(blocks):
        raise ValueError(f"checkpoint={segments} segments exceeds the model's {len(blocks)} blocks")
    bounds = [round(i * len(blocks) / segments) for i in range(segments + 1)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        x = checkpoint(blocks[a:b], x, use_reentrant=False)
    return x


def maybe_checkpoint(module: nn.Module, *args: torch.Tensor, enabled: bool) -> torch.Tensor:
    """Call ``module(*args)``, checkpointed (non-reentrant) when enabled and grad is on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)
