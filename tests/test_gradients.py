"""Gradient-health diagnostics on constructed models with known answers."""
import torch
from torch import nn

from sciml_bench.measure.gradients import gradient_health
from sciml_bench.models import create_model


def _mlp(act, depth=20, width=32, init=None):
    layers, d = [], 8
    for _ in range(depth):
        lin = nn.Linear(d, width)
        if init:
            init(lin.weight)
            nn.init.zeros_(lin.bias)
        layers += [lin, act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 1))


def _mse(model, x, y):
    return lambda: nn.functional.mse_loss(model(x), y)


def test_all_negative_bias_relu_layer_is_fully_dead():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        model[0].weight.mul_(0.01)
        model[0].bias.fill_(-10.0)  # pre-activations < 0 for every input below
    x, y = torch.rand(64, 4), torch.rand(64, 1)
    h = gradient_health(model, _mse(model, x, y))
    assert h["dead_fraction"] == 1.0, f"expected 100% dead units, got {h['dead_fraction']}"
    assert h["activations"][0]["dead_fraction"] == 1.0


def test_sigmoid_depth_vanishes_against_relu_kaiming():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    sig = _mlp(nn.Sigmoid)
    relu = _mlp(nn.ReLU, init=lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    r_sig = gradient_health(sig, _mse(sig, x, y))["grad_ratio"]
    r_relu = gradient_health(relu, _mse(relu, x, y))["grad_ratio"]
    assert r_sig < 1e-6, f"20-layer sigmoid first/last gradient ratio {r_sig:.3g} does not vanish"
    assert r_relu > 1e-2, f"ReLU + Kaiming ratio {r_relu:.3g} should stay O(1)"
    assert r_sig < 1e-4 * r_relu


def test_saturation_nonfinite_and_state_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].weight.mul_(100.0)  # drives tanh into saturation, but BatchNorm rescales: turn it off
    model[1].eval()
    with torch.no_grad():
        model[1].weight.fill_(100.0)
    model[0].weight.grad = torch.ones_like(model[0].weight)
    stats_before = model[1].running_mean.clone()
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    h = gradient_health(model, _mse(model, x, y))
    assert h["saturation_fraction"] > 0.9, h["saturation_fraction"]
    assert not h["nonfinite"]
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight)), "existing grads must be restored"
    assert torch.equal(model[1].running_mean, stats_before)
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")
    assert gradient_health(model, _mse(model, x_bad, y))["nonfinite"]


def test_layers_follow_execution_order_on_zoo_models():
    model = create_model("mlp_plain", depth=3, width=16)
    x, y = torch.randn(8, 10), torch.randn(8, 1)
    h = gradient_health(model, _mse(model, x, y))
    assert [layer["name"] for layer in h["layers"]] == ["blocks.0.fc", "blocks.1.fc", "blocks.2.fc", "head"]
