"""Layer micro-benchmarks: activations, norms, attention (manual vs SDPA), spectral vs spatial convolution.

Layers come from the zoo (``sciml_bench.models.layers`` and the model modules); values, sizes and
groups from the suite's studies (see conftest.micro_cases). Each timed call is forward + backward.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import micro_cases, params
from torch import nn

from sciml_bench.models import get_model_spec
from sciml_bench.models.fno import SpectralConv
from sciml_bench.models.layers import ACTIVATIONS, NORMS, get_act_layer, get_norm_layer
from sciml_bench.models.transformer import ATTENTIONS, SelfAttention


def _size(case, knob: str, default: int) -> int:
    """A size knob of the case, else the model's registered default, else ``default``."""
    return get_model_spec(case.model).merged(case.knobs).get(knob) or default


def _fwd_bwd(module: nn.Module, x: torch.Tensor):
    """forward + backward into the input's and the parameters' .grad (reset each call, as in a train step)."""
    def step():
        x.grad = None
        module.zero_grad(set_to_none=True)
        y = module(x)
        y.backward(torch.ones_like(y))
    return step


ACT_POINTS = micro_cases("activation", "activation", ACTIVATIONS, dict(model="mlp", batch_size=256, width=256))


@pytest.mark.parametrize("point", params(ACT_POINTS))
def test_activation_fwd_bwd(micro, point):
    case = point.case
    x = torch.randn(case.batch_size, _size(case, "width", 256), device=case.device, requires_grad=True)  # (B, W)
    micro(point, _fwd_bwd(get_act_layer(case.activation)().to(case.device), x))


NORM_POINTS = micro_cases("norm", "norm", [n for n in NORMS if n != "none"],
                          dict(model="small_cnn", batch_size=16))


@pytest.mark.parametrize("point", params(NORM_POINTS))
def test_norm_fwd_bwd(micro, point):
    case = point.case
    r = _size(case, "resolution", 32)
    channels = _size(case, "width", 64)
    x = torch.randn(case.batch_size, channels, r, r, device=case.device, requires_grad=True)  # (B, C, H, W)
    layer = get_norm_layer(case.norm, "2d")(channels).to(case.device).train()
    micro(point, _fwd_bwd(layer, x))


ATTN_POINTS = micro_cases("attention", "attention", ATTENTIONS,
                          dict(model="transformer_encoder", batch_size=8, seq_len=128, width=256))


@pytest.mark.parametrize("point", params(ATTN_POINTS))
def test_attention_manual_vs_sdpa(micro, point):
    case = point.case
    width, seq = _size(case, "width", 256), _size(case, "seq_len", 128)
    x = torch.randn(case.batch_size, seq, width, device=case.device, requires_grad=True)  # (B, T, C)
    micro(point, _fwd_bwd(SelfAttention(width, 8, attention=case.attention).to(case.device), x))


# The suite's FNO-1D case (or the zoo's default sizes), timed as two operators.
(_FNO,) = micro_cases("spectral-conv", "model", ["fno1d"], dict(model="fno1d", batch_size=8, width=32), minimum=1)
SPECTRAL_POINTS = [dataclasses.replace(_FNO, variant=v) for v in ("spectral", "conv")]
MODES = 16  # the FNO's retained Fourier modes (fno.FNO default)


@pytest.mark.parametrize("point", params(SPECTRAL_POINTS))
def test_spectral_conv_vs_conv(micro, point):
    """SpectralConv keeps MODES Fourier modes of a global convolution; the "equivalent" Conv1d is the
    same global operator in physical space: a circular kernel as wide as the grid (O(N^2) vs O(N log N))."""
    case = point.case
    width, n = _size(case, "width", 32), _size(case, "resolution", 256)
    x = torch.randn(case.batch_size, width, n, device=case.device, requires_grad=True)  # (B, C, N)
    if point.variant == "spectral":
        layer: nn.Module = SpectralConv(width, width, (MODES,))
    else:
        layer = nn.Conv1d(width, width, n, padding="same", padding_mode="circular", bias=False)
    micro(point, _fwd_bwd(layer.to(case.device), x))
