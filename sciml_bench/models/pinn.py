"""Physics-informed network for the oscillator u'' + u = 0 on [0, 2π], u(0) = 1, u'(0) = 0 (solution cos t)."""
from __future__ import annotations

import math

import torch
from torch import nn

from sciml_bench.models.registry import register_model
from sciml_bench.models.mlp import MLP

T_END = 2 * math.pi


def oscillator_residual(model: nn.Module, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual u'' + u at collocation points ``t`` (N, 1), and u(0), u'(0), all by autograd.

    ``create_graph=True`` keeps the derivative graph, so a loss built from the residual backpropagates
    through second-order autograd (the point of benchmarking a PINN train step). The model must be
    pointwise in t (no batch statistics), which is why the PINN accepts no norm knob.
    """
    t = t.detach().requires_grad_(True)
    t0 = torch.zeros(1, 1, device=t.device, dtype=t.dtype, requires_grad=True)
    u = model(torch.cat((t, t0)))  # (N + 1, 1): one forward for the interior and the initial point
    du, du0 = torch.autograd.grad(u.sum(), (t, t0), create_graph=True)
    (ddu,) = torch.autograd.grad(du.sum(), t, create_graph=True)
    return ddu + u[:-1], u[-1], du0.reshape(1)


def pinn_loss(model: nn.Module, t: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared residual plus the two initial-condition penalties. ``targets`` (the exact cos t)
    are not used: the loss is physics only, and the targets serve evaluation."""
    res, u0, du0 = oscillator_residual(model, t)
    return res.float().pow(2).mean() + (u0.float() - 1).pow(2).sum() + du0.float().pow(2).sum()


def collocation_batch(batch_size: int, g: torch.Generator, **_):
    """Collocation points t ~ U[0, 2π] (B, 1) and the exact solution cos t (B, 1)."""
    t = T_END * torch.rand(batch_size, 1, generator=g)
    return t, torch.cos(t)


def _create_pinn(width: int = 64, depth: int = 3, activation="tanh") -> MLP:
    return MLP(1, (width,) * depth, 1, activation=activation)


@register_model(family="scientific", task="physics", batch=collocation_batch, loss=pinn_loss,
                knobs=("width", "depth", "activation"))
def pinn_oscillator(**kwargs) -> MLP:
    """PINN for u'' + u = 0 on [0, 2π], u(0)=1, u'(0)=0: tanh MLP 1 -> 3 x 64 -> 1, second-order autograd loss."""
    return _create_pinn(**kwargs)
