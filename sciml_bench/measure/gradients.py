"""Gradient health of any nn.Module from one forward/backward pass, through module hooks.

Forward hooks on every module that owns a weight (Linear, Conv, recurrent, embedding) give the
execution order of the layers; forward hooks on activation modules give activation statistics.
After ``backward`` the per-layer gradient norms are read from the parameters. Nothing about a
model's structure is assumed, so zoo and plugin models are measured by the same code.

- per-layer gradient norm (L2 over the layer's own parameters), in execution order;
- first-to-last layer gradient-norm ratio: << 1 vanishing towards the input, >> 1 exploding;
- dead-unit fraction of ReLU-family activations: units (a feature at a position) whose output is
  <= 0 for every sample of the batch (they pass no gradient on that batch);
- saturation fraction of tanh / sigmoid outputs (|tanh| > 0.99; sigmoid < 0.01 or > 0.99);
- per-activation-layer output mean and std;
- whether any gradient or activation is NaN/Inf.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

RELU_FAMILY = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.PReLU, nn.RReLU)
SATURATING = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid)
OTHER_ACTS = (nn.GELU, nn.SiLU, nn.Mish, nn.Softplus)
SATURATION = 0.99  # |tanh| above this, or sigmoid within 1 - this of 0 or 1, counts as saturated


def _owns_weight(m: nn.Module) -> bool:
    return any(p.dim() >= 2 for p in m.parameters(recurse=False))


def _is_activation(m: nn.Module) -> bool:
    return isinstance(m, RELU_FAMILY + SATURATING + OTHER_ACTS) or type(m).__name__ in ("XSin",)


def _saturated(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(m, (nn.Sigmoid, nn.Hardsigmoid)):
        return (y < 1 - SATURATION) | (y > SATURATION)
    return y.abs() > SATURATION


def gradient_health(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> dict[str, Any]:
    """Run ``loss_fn()`` (a forward pass of ``model`` returning a scalar loss) and its backward with
    hooks attached; return the diagnostics above. Existing ``.grad`` values and buffers (BatchNorm
    running statistics) are saved and restored, so the call does not disturb a training run in
    progress (the optimizer state is untouched).

    Returns a dict: ``layers`` [{name, grad_norm}], ``grad_ratio`` (first/last; None when fewer than
    two layers have gradients or the last is 0), ``activations`` [{name, kind, mean, std, dead_fraction
    | saturation_fraction}], ``dead_fraction`` and ``saturation_fraction`` (over all units of that
    family; None without such activations), ``nonfinite`` (bool) and ``loss``.
    """
    order: list[str] = []
    acts: list[dict[str, Any]] = []
    names = {m: n for n, m in model.named_modules()}
    counts = {"dead": 0, "units": 0, "sat": 0, "elems": 0}
    nonfinite = [False]

    def on_layer(m, _inp, _out):
        if names[m] not in order:
            order.append(names[m])

    def on_act(m, _inp, out):
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return
        y = out.detach().float()
        if not torch.isfinite(y).all():
            nonfinite[0] = True
        info: dict[str, Any] = {"name": names[m], "kind": type(m).__name__, "mean": y.mean().item(),
                                "std": y.std().item() if y.numel() > 1 else 0.0}
        if isinstance(m, RELU_FAMILY) and y.dim() >= 2:
            dead = (y <= 0).all(dim=0)  # a unit dead on the whole batch
            info["dead_fraction"] = dead.float().mean().item()
            counts["dead"] += int(dead.sum())
            counts["units"] += dead.numel()
        elif isinstance(m, SATURATING):
            sat = _saturated(m, y)
            info["saturation_fraction"] = sat.float().mean().item()
            counts["sat"] += int(sat.sum())
            counts["elems"] += sat.numel()
        acts.append(info)

    hooks = [m.register_forward_hook(on_layer) for m in model.modules() if _owns_weight(m)]
    hooks += [m.register_forward_hook(on_act) for m in model.modules() if _is_activation(m)]
    saved = {p: p.grad for p in model.parameters()}
    buffers = {b: b.clone() for b in model.buffers()}  # e.g. BatchNorm running statistics
    try:
        for p in model.parameters():
            p.grad = None
        loss = loss_fn()
        loss.backward()
        modules = dict(model.named_modules())
        layers = []
        for name in order:
            grads = [p.grad for p in modules[name].parameters(recurse=False) if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
                layers.append({"name": name, "grad_norm": norm.item()})
        if any(not math.isfinite(layer["grad_norm"]) for layer in layers) or not torch.isfinite(loss.detach()):
            nonfinite[0] = True
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for p, g in saved.items():
                p.grad = g
            for b, v in buffers.items():
                b.copy_(v)
    first, last = (layers[0]["grad_norm"], layers[-1]["grad_norm"]) if len(layers) >= 2 else (None, None)
    ratio = first / last if first is not None and last and math.isfinite(first) and math.isfinite(last) else None
    return {"layers": layers, "grad_ratio": ratio, "activations": acts,
            "dead_fraction": counts["dead"] / counts["units"] if counts["units"] else None,
            "saturation_fraction": counts["sat"] / counts["elems"] if counts["elems"] else None,
            "nonfinite": nonfinite[0], "loss": float(loss.detach())}
