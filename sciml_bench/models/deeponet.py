"""DeepONet: branch and trunk MLPs whose inner product approximates an operator G(u)(y)."""
from __future__ import annotations

import math

import torch
from torch import nn

from sciml_bench.models.registry import mse, register_model
from sciml_bench.models.layers import get_act_layer
from sciml_bench.models.mlp import MLP


class DeepONet(nn.Module):
    """G(u)(y) ≈ Σ_k b_k(u) t_k(y) + b0 (Lu et al. 2021).

    The branch MLP reads u at ``sensors`` fixed points (B, m); the trunk MLP reads query points
    (B, P, dim). Both end in ``basis`` features with the activation applied (the trunk's last layer
    too, as in the paper). Output (B, P).
    """

    def __init__(self, sensors: int = 100, dim: int = 1, width: int = 128, depth: int = 3, basis: int = 128,
                 activation="tanh"):
        super().__init__()
        self.branch = MLP(sensors, (width,) * depth, basis, activation=activation)
        self.trunk = MLP(dim, (width,) * depth, basis, activation=activation)
        self.trunk_act = get_act_layer(activation)()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (B, m), (B, P, dim) -> (B, P)
        b = self.branch(u)  # (B, basis)
        t = self.trunk_act(self.trunk(y))  # (B, P, basis)
        return torch.einsum("bk,bpk->bp", b, t) + self.bias


def _create_deeponet(**kwargs) -> DeepONet:
    return DeepONet(**kwargs)


def antiderivative_batch(batch_size: int, g: torch.Generator, sensors: int = 100, points: int = 100, modes: int = 5,
                         **_):
    """Antiderivative operator G(u)(y) = ∫_0^y u(s) ds on [0, 1], exact for random Fourier series u.

    Returns ((u at ``sensors`` equispaced points (B, m), query points y ∈ [0, 1] (B, P, 1)), G(u)(y) (B, P)).
    """
    k = 2 * math.pi * torch.arange(1, modes + 1, dtype=torch.float32)  # (K,)
    a = torch.randn(batch_size, modes, generator=g) / torch.arange(1, modes + 1)
    b = torch.randn(batch_size, modes, generator=g) / torch.arange(1, modes + 1)
    x = torch.linspace(0, 1, sensors)
    y = torch.rand(batch_size, points, 1, generator=g)
    kx = k[:, None] * x  # (K, m)
    u = torch.einsum("bk,kx->bx", a, torch.sin(kx)) + torch.einsum("bk,kx->bx", b, torch.cos(kx))
    ky = k * y  # (B, P, K)
    gu = (a[:, None] * (1 - torch.cos(ky)) / k + b[:, None] * torch.sin(ky) / k).sum(-1)
    return (u, y), gu


@register_model(family="scientific", task="operator", batch=antiderivative_batch, loss=mse,
                knobs=("width", "depth", "activation"))
def deeponet(**kwargs) -> DeepONet:
    """DeepONet for the antiderivative operator: 100 sensors, branch/trunk MLPs 3 x 128 (tanh), 128 basis functions."""
    return _create_deeponet(**kwargs)
