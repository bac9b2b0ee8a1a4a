"""Recurrent and physics-informed micro-benchmarks: LSTM vs GRU layers, PINN second-order autograd."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import micro_cases, params

from sciml_bench.models import create_model, get_model_spec
from sciml_bench.models.pinn import oscillator_residual, pinn_loss

RNN_POINTS = micro_cases("recurrent-cell", "model", ["lstm", "gru"], dict(batch_size=32, width=64, depth=1))


@pytest.mark.parametrize("point", params(RNN_POINTS))
def test_lstm_vs_gru(micro, point):
    """The zoo model's recurrent layers alone (nn.LSTM / nn.GRU), forward + backward over the sequence."""
    case = point.case
    rnn = create_model(case.model, **case.knobs).rnn.to(case.device)
    x, _ = get_model_spec(case.model).sample_batch(case.batch_size, case.device, **case.knobs)  # (B, T, F)
    x.requires_grad_(True)

    def step():
        x.grad = None
        rnn.zero_grad(set_to_none=True)
        out, _ = rnn(x)  # (B, T, W)
        out.sum().backward()
    micro(point, step)


(_PINN,) = micro_cases("pinn-autograd", "model", ["pinn_oscillator"], dict(batch_size=256), minimum=1)
PINN_POINTS = [dataclasses.replace(_PINN, variant=v) for v in ("residual", "residual+backward")]


@pytest.mark.parametrize("point", params(PINN_POINTS))
def test_pinn_second_order_autograd(micro, point):
    """u'' + u by two nested autograd.grad calls (create_graph=True); "+backward" also backpropagates
    the physics loss through them, as a PINN train step does."""
    case = point.case
    model = create_model(case.model, **case.knobs).to(case.device)
    t, target = get_model_spec(case.model).sample_batch(case.batch_size, case.device, **case.knobs)  # (B, 1)
    params_ = list(model.parameters())
    if point.variant == "residual":
        micro(point, lambda: oscillator_residual(model, t)[0])
    else:
        micro(point, lambda: torch.autograd.grad(pinn_loss(model, t, target), params_))
