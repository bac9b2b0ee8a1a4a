"""Multilayer perceptrons: plain, normalized, dropout and residual variants."""
from __future__ import annotations

import torch
from torch import nn

from sciml_bench.models.registry import register_model, mse
from sciml_bench.models.layers import checkpoint_seq, get_act_layer, get_norm_layer


class MLPBlock(nn.Module):
    """Linear -> norm -> activation -> dropout, with an identity skip when ``residual``."""

    def __init__(self, d_in: int, d_out: int, act_layer, norm_layer, dropout: float = 0.0,
                 residual: bool = False):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.norm = norm_layer(d_out)
        self.act = act_layer()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.residual = residual and d_in == d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.act(self.norm(self.fc(x))))
        return x + y if self.residual else y


class MLP(nn.Module):
    """A stack of MLPBlocks and a linear head; ``checkpoint_segments`` > 0 checkpoints the blocks."""

    def __init__(self, in_features: int = 10, hidden: tuple[int, ...] = (128, 64, 32), out_features: int = 1,
                 activation="relu", norm: str = "none", dropout: float = 0.0, residual: bool = False):
        super().__init__()
        act_layer, norm_layer = get_act_layer(activation), get_norm_layer(norm, "1d")
        dims = (in_features, *hidden)
        self.blocks = nn.Sequential(*[MLPBlock(a, b, act_layer, norm_layer, dropout, residual)
                                      for a, b in zip(dims[:-1], dims[1:])])
        self.head = nn.Linear(dims[-1], out_features)
        self.checkpoint_segments = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        return self.head(checkpoint_seq(self.blocks, x, self.checkpoint_segments))


def _create_mlp(width=None, depth=None, hidden=(128, 64, 32), **kwargs) -> MLP:
    if width is not None or depth is not None:  # scaling studies: `depth` equal layers of `width`
        hidden = (width or hidden[0],) * (depth or len(hidden))
    return MLP(hidden=tuple(hidden), **kwargs)


def regression_batch(batch_size: int, g: torch.Generator, in_features: int = 10, out_features: int = 1, **_):
    """Inputs in N(0, 1) and a smooth nonlinear target: sum of sin over features."""
    x = torch.randn(batch_size, in_features, generator=g)
    y = torch.sin(x).sum(1, keepdim=True).expand(batch_size, out_features).contiguous()
    return x, y


_MLP_KNOBS = ("width", "depth", "activation", "norm", "checkpoint")


@register_model(family="mlp", task="regression", batch=regression_batch, loss=mse, knobs=_MLP_KNOBS)
def mlp(**kwargs) -> MLP:
    """MLP 10 -> 128-64-32 -> 1."""
    return _create_mlp(**kwargs)


@register_model(family="mlp", task="regression", batch=regression_batch, loss=mse, knobs=_MLP_KNOBS,
                defaults=dict(width=64, depth=8))
def mlp_residual(**kwargs) -> MLP:
    """Residual (skip) MLP, 8 layers of 64; pair with ``mlp --set width=64 depth=8``."""
    return _create_mlp(residual=True, **kwargs)


@register_model(family="mlp", task="regression", batch=regression_batch, loss=mse, knobs=_MLP_KNOBS,
                defaults=dict(width=64, depth=8))
def mlp_plain(**kwargs) -> MLP:
    """Plain MLP, 8 layers of 64, no skips: the partner of ``mlp_residual`` at equal depth."""
    return _create_mlp(residual=False, **kwargs)


@register_model(family="mlp", task="regression", batch=regression_batch, loss=mse, knobs=_MLP_KNOBS,
                defaults=dict(norm="batch"))
def mlp_batchnorm(**kwargs) -> MLP:
    """MLP 10 -> 128-64-32 -> 1 with BatchNorm after every hidden Linear."""
    return _create_mlp(**kwargs)


@register_model(family="mlp", task="regression", batch=regression_batch, loss=mse, knobs=_MLP_KNOBS,
                defaults=dict(norm="layer"))
def mlp_layernorm(**kwargs) -> MLP:
    """MLP 10 -> 128-64-32 -> 1 with LayerNorm after every hidden Linear."""
    return _create_mlp(**kwargs)


@register_model(family="mlp", task="regression", batch=regression_batch, loss=mse, knobs=_MLP_KNOBS)
def mlp_dropout(**kwargs) -> MLP:
    """MLP 10 -> 128-64-32 -> 1 with dropout 0.2 after every hidden activation."""
    return _create_mlp(dropout=0.2, **kwargs)
