"""Tests for the model zoo: every entry trains a step; knobs, parities and physics hold."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sciml_bench.errors import UsageError
from sciml_bench.models import (create_model, cross_entropy, forward, get_model_spec, list_models, mse,
                                param_count)
from sciml_bench.models.layers import NORM_TYPES, XSin

ALL = list_models()
TINY = dict(resolution=16, seq_len=16, width=16, depth=2)
TINY_OVERRIDES = {"vgg11": dict(resolution=32)}  # five 2x pools need 32 pixels


def tiny(name: str) -> dict:
    """The small-size knobs a model accepts (so every entry runs fast on CPU)."""
    spec = get_model_spec(name)
    return {k: v for k, v in dict(TINY, **TINY_OVERRIDES.get(name, {})).items() if k in spec.knobs}


def with_knob(knob: str) -> list[str]:
    return [n for n in ALL if knob in get_model_spec(n).knobs]


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seed, and run single-threaded: tiny ops on a shared 2-core box are far faster without OpenMP spinning."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registry_covers_the_issue_families():
    families = {get_model_spec(n).family for n in ALL}
    for fam in ("mlp", "cnn", "resnet", "densenet", "unet", "autoencoder", "rnn", "transformer", "scientific", "reference"):
        assert fam in families, f"no model of family {fam!r} registered"
    assert list_models("resnet*")[:3] == ["resnet18", "resnet18_imagenet", "resnet18_plain"], \
        f"glob + natural sort broken: {list_models('resnet*')}"


@pytest.mark.parametrize("name", ALL)
def test_train_step(name):
    spec, knobs = get_model_spec(name), tiny(name)
    model = create_model(name, **knobs)
    inputs, targets = spec.sample_batch(4, **knobs)
    out = forward(model, inputs)
    if spec.loss is cross_entropy:
        assert out.shape == (4, out.shape[1]) and targets.shape == (4,), f"{name}: logits {out.shape}"
        assert targets.max() < out.shape[1], f"{name}: label out of range of {out.shape[1]} classes"
    elif spec.loss is mse:
        assert out.shape == targets.shape, f"{name}: output {tuple(out.shape)} != target {tuple(targets.shape)}"
    assert torch.isfinite(out).all(), f"output has NaNs/Infs for {name}"
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss = spec.loss(model, inputs, targets)
    assert loss.dim() == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), f"{name}: some parameters got no gradient"
    assert all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradients"
    opt.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert changed > 0, f"{name}: optimizer step changed no parameter"


@pytest.mark.parametrize("name", ALL)
def test_sample_batch_dtype_device_and_shape(name):
    spec, knobs = get_model_spec(name), tiny(name)
    inputs, targets = spec.sample_batch(3, device="cpu", dtype=torch.float64, **knobs)
    tensors = list(inputs) if isinstance(inputs, tuple) else [inputs]
    for t in tensors + [targets]:
        assert t.device.type == "cpu", f"{name}: batch tensor on {t.device}"
        assert t.dtype in (torch.float64, torch.int64), f"{name}: batch dtype {t.dtype}"
        assert t.shape[0] == 3, f"{name}: batch dimension {t.shape[0]} != 3"
    if "resolution" in knobs and spec.family != "scientific":
        assert tensors[0].shape[-1] == knobs["resolution"], f"{name}: resolution knob not applied, {tensors[0].shape}"
    if "seq_len" in knobs and spec.family in ("transformer", "rnn"):
        assert tensors[0].shape[1] == 16, f"{name}: seq_len knob not applied, {tensors[0].shape}"
    again = spec.sample_batch(3, dtype=torch.float64, **knobs)[1]
    assert torch.equal(again, targets), f"{name}: sample batch not reproducible for a fixed seed"


@pytest.mark.parametrize("name", with_knob("checkpoint"))
def test_checkpointing_gives_identical_gradients(name):
    spec, knobs = get_model_spec(name), tiny(name)
    model = create_model(name, **knobs)
    inputs, targets = spec.sample_batch(2, **knobs)
    grads = []
    for segments in (0, 2):
        model.zero_grad()
        model.checkpoint_segments = segments
        torch.manual_seed(1)
        spec.loss(model, inputs, targets).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: checkpointed grads differ: {m}")


# Parity with independent references

def test_resnet_imagenet_param_counts_equal_torchvision():
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models
    for ours, ref in (("resnet18_imagenet", tv.resnet18), ("resnet50_imagenet", tv.resnet50)):
        n_ours, n_ref = param_count(create_model(ours)), param_count(ref(weights=None))
        assert n_ours == n_ref, f"{ours}: {n_ours} parameters, torchvision {n_ref}"


@pytest.mark.parametrize("name,norm_first", [("transformer_encoder", True), ("transformer_encoder_postnorm", False)])
def test_transformer_encoder_param_count_equals_torch(name, norm_first):
    d, h, ff, depth = 256, 8, 1024, 4
    model = create_model(name)
    layer = nn.TransformerEncoderLayer(d, h, ff, batch_first=True, norm_first=norm_first)
    ref = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(d) if norm_first else None, enable_nested_tensor=False)
    ours = param_count(model.blocks) + param_count(model.norm)
    assert ours == param_count(ref), f"{name}: stack has {ours} parameters, nn.TransformerEncoder {param_count(ref)}"
    ref_model = create_model("torch_transformer_encoder")
    if norm_first:
        assert param_count(model) == param_count(ref_model), "transformer_encoder and its reference differ in size"


def test_attention_manual_equals_sdpa():
    for name in ("gpt", "transformer_encoder", "lorenz_gpt"):
        spec, knobs = get_model_spec(name), tiny(name)
        sdpa = create_model(name, attention="sdpa", **knobs).eval()
        manual = create_model(name, attention="manual", **knobs).eval()
        manual.load_state_dict(sdpa.state_dict())
        x, _ = spec.sample_batch(2, **knobs)
        torch.testing.assert_close(manual(x), sdpa(x), rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{name}: manual attention differs from SDPA: {m}")


def test_gpt_is_causal():
    model = create_model("gpt", **tiny("gpt")).eval()
    x, _ = get_model_spec("gpt").sample_batch(1, seq_len=16)
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 512
    torch.testing.assert_close(model(x)[:, :-1], model(y)[:, :-1], msg="gpt: a future token changed past logits")


# Knobs change what they claim

def _linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_xavier_variance_matches_theory():
    model = create_model("mlp", width=256, depth=3, init="xavier_normal")
    for w in (m.weight for m in _linears(model)[1:3]):  # 256 x 256 hidden layers
        fan_out, fan_in = w.shape
        expected = 2.0 / (fan_in + fan_out)
        rel_se = math.sqrt(2.0 / w.numel())  # std error of a sample variance, relative
        assert abs(w.var().item() / expected - 1) < 5 * rel_se, \
            f"xavier_normal var {w.var():.3g}, expected {expected:.3g}"
    model = create_model("mlp", width=256, depth=3, init="xavier_uniform")
    w = _linears(model)[1].weight
    bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
    assert w.abs().max() <= bound + 1e-6, "xavier_uniform exceeds its bound"
    assert abs(w.var().item() / (2.0 / sum(w.shape)) - 1) < 0.05, "xavier_uniform variance off"


def test_other_inits_statistics():
    w = _linears(create_model("mlp", width=256, depth=3, init="kaiming_normal"))[1].weight
    assert abs(w.var().item() / (2.0 / w.shape[1]) - 1) < 0.05, f"kaiming_normal var {w.var():.3g} != 2/fan_in"
    w = _linears(create_model("mlp", width=256, depth=3, init="normal"))[1].weight
    assert abs(w.std().item() - 0.02) < 0.001, f"normal init std {w.std():.4f} != 0.02"
    model = create_model("mlp", init="zeros")
    assert all((m.weight == 0).all() for m in _linears(model)), "zeros init left nonzero weights"
    w = _linears(create_model("mlp", width=64, depth=3, init="orthogonal"))[1].weight
    torch.testing.assert_close(w @ w.T, torch.eye(64), atol=1e-4, rtol=0, msg="orthogonal init is not orthogonal")
    lstm = create_model("lstm", init="lstm").rnn
    h = lstm.hidden_size
    assert (lstm.bias_ih_l0[h:2 * h] == 1).all() and (lstm.bias_ih_l0[:h] == 0).all(), "lstm recipe: forget bias not 1"
    whh = lstm.weight_hh_l0[:h]
    torch.testing.assert_close(whh @ whh.T, torch.eye(h), atol=1e-4, rtol=0, msg="lstm recipe: W_hh not orthogonal")
    w0 = create_model("mlp").blocks[0].fc.weight
    assert not torch.equal(w0, _linears(create_model("mlp", init="xavier_normal"))[0].weight), "init had no effect"


@pytest.mark.parametrize("name", with_knob("norm"))
def test_norm_knob(name):
    none = create_model(name, norm="none", **tiny(name))
    left = [type(m).__name__ for m in none.modules() if isinstance(m, NORM_TYPES)]
    assert not left, f"{name}: norm=none left norm layers {left}"
    for norm, kind in (("batch", nn.modules.batchnorm._BatchNorm), ("layer", (nn.LayerNorm, nn.GroupNorm))):
        model = create_model(name, norm=norm, **tiny(name))
        assert any(isinstance(m, kind) for m in model.modules()), f"{name}: norm={norm} added no {kind}"
        assert not any(isinstance(m, NORM_TYPES) and not isinstance(m, kind) for m in model.modules()), \
            f"{name}: norm={norm} left other norm kinds"
        inputs, targets = get_model_spec(name).sample_batch(4, **tiny(name))
        assert torch.isfinite(forward(model, inputs)).all(), f"{name}: norm={norm} forward not finite"


@pytest.mark.parametrize("name", with_knob("activation"))
def test_activation_knob_swaps_every_activation(name):
    default_acts = (nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU)
    base = create_model(name, **tiny(name))
    n_default = sum(isinstance(m, default_acts) for m in base.modules())
    assert n_default > 0, f"{name}: no activation module found at default"
    model = create_model(name, activation="xsin", **tiny(name))
    left = [type(m).__name__ for m in model.modules() if isinstance(m, default_acts)]
    assert not left, f"{name}: activation=xsin left {left}"
    n_xsin = sum(isinstance(m, XSin) for m in model.modules())
    assert n_xsin >= n_default, f"{name}: {n_xsin} XSin modules for {n_default} default activations"


@pytest.mark.parametrize("name", with_knob("width"))
def test_width_and_depth_knobs_change_size(name):
    spec = get_model_spec(name)
    small = param_count(create_model(name, width=16, **({"depth": 2} if "depth" in spec.knobs else {})))
    wide = param_count(create_model(name, width=32, **({"depth": 2} if "depth" in spec.knobs else {})))
    assert wide > small, f"{name}: width 32 has {wide} params, not more than width 16 ({small})"
    if "depth" in spec.knobs:
        deep = param_count(create_model(name, width=16, depth=3))
        assert deep > small, f"{name}: depth 3 has {deep} params, not more than depth 2 ({small})"


def test_unsupported_knob_raises_naming_accepted_knobs():
    with pytest.raises(UsageError, match=r"norm.*accepts: depth, init, seq_len, width"):
        create_model("rnn", norm="batch")
    with pytest.raises(UsageError, match="attention"):
        create_model("resnet18", attention="manual")
    for name in ALL:  # "init" is accepted by every entry
        assert "init" in get_model_spec(name).knobs, f"{name} does not accept init"


def test_plain_and_residual_pairs():
    res = create_model("resnet18", **tiny("resnet18"))
    plain = create_model("resnet18_plain", **tiny("resnet18_plain"))
    assert all(b.shortcut is None for b in plain.blocks), "resnet18_plain still has skips"
    assert sum(isinstance(m, nn.Conv2d) for m in plain.modules()) == 17, "plain resnet18 must keep its 17 convs"
    assert param_count(plain) < param_count(res), "plain resnet18 should lack the projection shortcuts"
    assert param_count(create_model("mlp_plain")) == param_count(create_model("mlp_residual")), \
        "mlp_plain and mlp_residual must be equal size"
    from sciml_bench.models.resnet import BasicBlock, Bottleneck
    assert BasicBlock.expansion == 1 and Bottleneck.expansion == 4, "block expansions wrong"


# Shapes and physics of specific models

def test_autoencoder_output_matches_input():
    model = create_model("conv_autoencoder")
    x, y = get_model_spec("conv_autoencoder").sample_batch(2)
    assert x.shape == y.shape == model(x).shape == (2, 1, 28, 28), f"autoencoder shape {model(x).shape}"
    assert 0 <= y.min() and y.max() <= 1, "clean images should lie in [0, 1]"


def test_packed_lstm_ignores_padding():
    model = create_model("lstm_packed", **tiny("lstm_packed")).eval()
    (x, lengths), _ = get_model_spec("lstm_packed").sample_batch(4, seq_len=16)
    short = int(lengths.argmin())
    assert lengths[short] < 16, "batch has no padded sequence"
    x2 = x.clone()
    x2[short, lengths[short]:] = 100.0
    torch.testing.assert_close(model(x, lengths), model(x2, lengths), msg="padding leaked into the packed LSTM")


def test_fno_resolution_invariance():
    spec = get_model_spec("fno1d")
    model = create_model("fno1d", width=16, depth=2, resolution=64)
    x64, y64 = spec.sample_batch(8, resolution=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        spec.loss(model, x64, y64).backward()
        opt.step()
    x128, y128 = spec.sample_batch(8, resolution=128)
    torch.testing.assert_close(x128[..., ::2], x64, atol=1e-5, rtol=0, msg="128-grid batch is not the same field")
    with torch.no_grad():
        loss64, out128 = spec.loss(model, x64, y64).item(), model(x128)
        loss128 = nn.functional.mse_loss(out128, y128).item()
    assert out128.shape == (8, 1, 128), f"FNO at 128 points gave {out128.shape}"
    base = y64.pow(2).mean().item()
    assert loss64 < 0.5 * base, f"FNO did not train at 64 points: {loss64:.3g} vs {base:.3g}"
    assert loss128 < 2 * loss64 + 0.05 * base, f"FNO at 128 points: loss {loss128:.3g} vs {loss64:.3g} at 64"
    fno2 = create_model("fno2d", width=8, depth=2)
    for n in (32, 48):
        assert fno2(torch.randn(1, 1, n, n)).shape == (1, 1, n, n), f"fno2d failed at {n}x{n}"


def test_pinn_residual_zero_for_exact_solution():
    from sciml_bench.models.pinn import T_END, oscillator_residual, pinn_loss

    class Exact(nn.Module):
        def forward(self, t):
            return torch.cos(t)

    t, u = get_model_spec("pinn_oscillator").sample_batch(256, dtype=torch.float64)
    assert 0 <= t.min() and t.max() <= T_END, "collocation points outside [0, 2π]"
    torch.testing.assert_close(u, torch.cos(t), msg="pinn targets are not cos t")
    res, u0, du0 = oscillator_residual(Exact(), t)
    assert res.abs().max() < 1e-10 and abs(u0.item() - 1) < 1e-12 and abs(du0.item()) < 1e-12, \
        f"exact solution residual {res.abs().max():.3g}, u(0)={u0.item()}, u'(0)={du0.item()}"
    assert pinn_loss(Exact(), t, u) < 1e-20, "pinn loss nonzero for the exact solution"

    class Wrong(nn.Module):
        def forward(self, t):
            return torch.cos(2 * t)
    assert oscillator_residual(Wrong(), t)[0].abs().max() > 1, "residual misses a wrong solution"


def test_pinn_loss_has_second_order_graph():
    spec = get_model_spec("pinn_oscillator")
    model = create_model("pinn_oscillator", width=16, depth=2)
    t, u = spec.sample_batch(16)
    assert not t.requires_grad, "batch inputs must not require grad (the loss sets it)"
    spec.loss(model, t, u).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), "pinn loss gave no grads"


def test_scientific_batches_are_physical():
    # Burgers: grid fields on [0, 2π); mean is conserved by the periodic flow; viscosity damps energy
    u0, ut = get_model_spec("burgers_transformer").sample_batch(4, resolution=64)
    assert u0.shape == ut.shape == (4, 64), f"burgers shapes {u0.shape}, {ut.shape}"
    torch.testing.assert_close(u0.mean(1), ut.mean(1), atol=1e-4, rtol=0, msg="Burgers does not conserve the mean")
    assert (ut.pow(2).mean(1) < u0.pow(2).mean(1)).all(), "Burgers energy did not decay"
    # heat: exact decay, fields (B, 1, N, N)
    h0, ht = get_model_spec("fno2d").sample_batch(2, resolution=32)
    assert h0.shape == (2, 1, 32, 32) and (ht.pow(2).mean((1, 2, 3)) < h0.pow(2).mean((1, 2, 3))).all(), "heat data"
    # Lorenz: targets are the next states, on the attractor
    x, y = get_model_spec("lorenz_gpt").sample_batch(2, seq_len=16)
    assert x.shape == y.shape == (2, 16, 3), f"lorenz shapes {x.shape}"
    torch.testing.assert_close(x[:, 1:], y[:, :-1], msg="lorenz targets are not the next states")
    assert x[..., 2].min() > 0 and x.abs().max() < 60, "lorenz states off the attractor"
    # DeepONet antiderivative: G(u)(y) matches a trapezoid integral of the sensor values
    (u, yq), gu = get_model_spec("deeponet").sample_batch(2, dtype=torch.float64)
    assert u.shape == (2, 100) and yq.shape == (2, 100, 1) and gu.shape == (2, 100), "deeponet shapes"
    assert 0 <= yq.min() and yq.max() <= 1, "deeponet query points outside [0, 1]"
    xs = torch.linspace(0, 1, 100, dtype=torch.float64)
    j = int(yq[0, :, 0].argmax())
    mask = xs <= yq[0, j, 0]
    approx = torch.trapezoid(u[0, mask], xs[mask])
    assert abs(approx - gu[0, j]) < 0.05, f"antiderivative {gu[0, j]:.4f} vs trapezoid {approx:.4f}"


def test_unet_rejects_sizes_not_divisible_by_16():
    model = create_model("unet_small")
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32), "unet_small shape"
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.randn(1, 1, 40, 40))


def test_default_sizes():
    expected = {"mlp": 11777, "resnet18_imagenet": 11689512, "unet": 31036481}
    for name, n in expected.items():
        assert param_count(create_model(name)) == n, f"{name} default size changed"
    gpt = create_model("gpt")
    assert len(gpt.blocks) == 6 and gpt.tok.embedding_dim == 256, "gpt default is d 256, 6 layers"
    enc = create_model("transformer_encoder")
    assert len(enc.blocks) == 4 and enc.blocks[0].mlp[0].out_features == 1024, "encoder default is 4 layers, ff 1024"
