"""Fourier Neural Operators (1D, 2D): spectral convolution with truncated modes, lifting and projection."""
from __future__ import annotations

import math

import torch
from torch import nn

from sciml_bench.models.registry import mse, register_model
from sciml_bench.data.fields import burgers_1d, heat_2d
from sciml_bench.models.layers import get_act_layer, maybe_checkpoint


class SpectralConv(nn.Module):
    """Spectral convolution over the last ``dims`` axes: rfftn -> multiply the retained low modes by
    learned complex weights (in, out, *modes) -> irfftn. Weights are stored as real (..., 2) tensors
    (viewed as complex in forward) so optimizers, AMP casting and DDP treat them as ordinary floats.

    The FFT runs in fp32 (half-precision cuFFT only takes power-of-two sizes), so the layer is
    autocast-safe. In 2D both the positive and negative ky rows are kept, as in the FNO paper.
    """

    def __init__(self, c_in: int, c_out: int, modes: tuple[int, ...]):
        super().__init__()
        self.modes, self.dims = tuple(modes), len(modes)
        blocks = 2 ** (self.dims - 1)  # corners of the rfftn spectrum kept: 1 in 1D, 2 in 2D
        scale = 1.0 / (c_in * c_out)
        self.weight = nn.Parameter(scale * torch.rand(blocks, c_in, c_out, *self.modes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, *S) -> (B, C_out, *S)
        size = x.shape[-self.dims:]
        x_ft = torch.fft.rfftn(x.float(), dim=tuple(range(-self.dims, 0)))
        w = torch.view_as_complex(self.weight.float())
        # A grid too coarse to hold every retained mode uses the modes it has (the rest are zero there).
        m = [min(mo, s // 2 + 1 if d == self.dims - 1 else s // 2) for d, (mo, s) in enumerate(zip(self.modes, size))]
        out = torch.zeros(x.size(0), w.size(2), *x_ft.shape[2:], dtype=x_ft.dtype, device=x.device)
        if self.dims == 1:
            out[..., :m[0]] = torch.einsum("bix,iox->box", x_ft[..., :m[0]], w[0, ..., :m[0]])
        else:  # low positive and low negative kx rows, low ky columns
            out[..., :m[0], :m[1]] = torch.einsum("bixy,ioxy->boxy", x_ft[..., :m[0], :m[1]], w[0, ..., :m[0], :m[1]])
            out[..., -m[0]:, :m[1]] = torch.einsum("bixy,ioxy->boxy", x_ft[..., -m[0]:, :m[1]], w[1, ..., :m[0], :m[1]])
        return torch.fft.irfftn(out, s=size, dim=tuple(range(-self.dims, 0))).to(x.dtype)


class FNOLayer(nn.Module):
    """One Fourier layer: act(SpectralConv(x) + W x) with a pointwise (1x1) convolution W."""

    def __init__(self, width: int, modes: tuple[int, ...], act_layer, last: bool = False):
        super().__init__()
        self.spectral = SpectralConv(width, width, modes)
        self.pointwise = (nn.Conv1d if len(modes) == 1 else nn.Conv2d)(width, width, 1)
        self.act = nn.Identity() if last else act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.spectral(x) + self.pointwise(x))


class FNO(nn.Module):
    """Fourier Neural Operator on a uniform periodic grid, channels first: (B, C_in, *S) -> (B, C_out, *S).

    The grid coordinates are appended to the input, a pointwise lift lifts to ``width``, ``depth``
    FNOLayers mix globally in Fourier space, and a two-layer pointwise projection maps back. Nothing
    depends on the grid size, so a model built (or trained) at one resolution evaluates at another.
    """

    def __init__(self, dims: int = 1, in_chans: int = 1, out_chans: int = 1, width: int = 64, depth: int = 4,
                 modes: int = 16, proj: int = 128, activation="gelu"):
        super().__init__()
        act_layer = get_act_layer(activation)
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.dims = dims
        self.lift = conv(in_chans + dims, width, 1)
        self.layers = nn.ModuleList([FNOLayer(width, (modes,) * dims, act_layer, last=i == depth - 1)
                                     for i in range(depth)])
        self.proj = nn.Sequential(conv(width, proj, 1), act_layer(), conv(proj, out_chans, 1))
        self.checkpoint_segments = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = [torch.arange(s, device=x.device, dtype=x.dtype) * (2 * math.pi / s) for s in x.shape[2:]]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (dims, *S)
        h = self.lift(torch.cat((x, grid.expand(x.size(0), *grid.shape)), 1))
        for layer in self.layers:
            h = maybe_checkpoint(layer, h, enabled=self.checkpoint_segments > 0)
        return self.proj(h)


def _create_fno(resolution: int = 64, **kwargs) -> FNO:
    return FNO(**kwargs)


def burgers_field_batch(batch_size: int, g: torch.Generator, resolution: int = 256, **_):
    """Burgers u0 -> u(T=1) (nu = 0.1) on the grid x_j = 2πj/N of [0, 2π), channels first: (B, 1, N) each."""
    u0, ut = burgers_1d(batch_size, resolution, g)
    return u0[:, None], ut[:, None]


def heat_field_batch(batch_size: int, g: torch.Generator, resolution: int = 64, **_):
    """Heat equation u0 -> u(T=1) (kappa = 0.1) on the periodic grid of [0, 2π)^2: (B, 1, N, N) each."""
    u0, ut = heat_2d(batch_size, resolution, g)
    return u0[:, None], ut[:, None]


_FNO_KNOBS = ("resolution", "width", "depth", "activation", "checkpoint")


@register_model(family="scientific", task="operator", batch=burgers_field_batch, loss=mse,
                defaults=dict(resolution=256), knobs=_FNO_KNOBS)
def fno1d(**kwargs) -> FNO:
    """FNO 1D for Burgers u0 -> u(T=1): width 64, 4 Fourier layers, 16 modes, 256 grid points."""
    return _create_fno(**dict(dict(dims=1, width=64, modes=16), **kwargs))


@register_model(family="scientific", task="operator", batch=heat_field_batch, loss=mse,
                defaults=dict(resolution=64), knobs=_FNO_KNOBS)
def fno2d(**kwargs) -> FNO:
    """FNO 2D for the heat equation u0 -> u(T=1): width 32, 4 Fourier layers, 12x12 modes, 64x64 grid."""
    return _create_fno(**dict(dict(dims=2, width=32, modes=12), **kwargs))
