"""Test-only models for recommend, loaded as a plugin (SCIML_BENCH_PLUGINS=tests.recommend_models)."""
import torch
from torch import nn

from sciml_bench.models import mse, register_model


class NoisyUnderAutocast(nn.Module):
    """A small regression MLP whose output gets large noise whenever autocast is on: its bf16 path is
    deliberately inaccurate, its fp32 path exact."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if torch.is_autocast_enabled(x.device.type):
            y = y + torch.randn_like(y)  # unit noise on targets of scale ~0.1: the loss cannot come close
        return y


def _batch(batch_size, g, **_):
    x = torch.randn(batch_size, 4, generator=g)
    return x, 0.1 * torch.sin(x.sum(1, keepdim=True))


@register_model(family="test", task="regression", batch=_batch, loss=mse, knobs=("width",), hidden=True)
def noisy_bf16(width: int = 16, **_) -> nn.Module:
    return NoisyUnderAutocast(width)
