"""Training tasks: what a mode='fit' case learns, with ground truth, and how its result is scored.

``get_task(model)`` gives a zoo or plugin model its :class:`Task`: a data generator (a curated one
from ``sciml_bench.data.tasks``, which holds the generators themselves, or the zoo's own sample
batches), the metric that scores it (``task_metric``) and the model arguments it fixes. The data are
generated from fixed seeds, so every case and seed sees the same data. Fixed-budget training
(``sciml_bench.training``) and the workload of a fit case (``sciml_bench.workloads``) both use it.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sciml_bench.models import Batch, forward, get_model_spec, to_device

DATA_SEED, VAL_SEED = 1_000_003, 2_000_003  # fixed: every case and seed sees the same data
LORENZ_HORIZON = 10  # autoregressive rollout steps for the Lorenz forecast error


@dataclass(frozen=True)
class Task:
    """A learning task with ground truth: its data generator, its metric, and model arguments it fixes.

    ``make(n, generator, merged_knobs) -> (inputs, targets)`` on the CPU. ``metric`` is one of
    ``rel_l2`` (||pred - y|| / ||y|| over the validation set), ``accuracy``, ``psnr`` (dB against the
    validation targets' range) or ``rollout_rel_l2`` (autoregressive forecast over a horizon).
    """

    name: str
    metric: str
    make: Callable[[int, torch.Generator, dict[str, Any]], Batch]
    model_args: dict[str, Any] = field(default_factory=dict)
    grad_eval: bool = False  # the loss itself differentiates (PINN residuals): evaluate with grad on
    description: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ("accuracy", "psnr")

    def sample(self, n: int, device, dtype: torch.dtype, seed: int, knobs: dict[str, Any]) -> Batch:
        """A seeded batch of ``n`` samples on ``device`` (floating tensors in ``dtype``)."""
        inputs, targets = self.make(n, torch.Generator().manual_seed(seed), knobs)
        return to_device(inputs, device, dtype), to_device(targets, device, dtype)


def _zoo_batch(model: str) -> Callable[[int, torch.Generator, dict[str, Any]], Batch]:
    spec = get_model_spec(model)
    return lambda n, g, knobs: spec.batch(n, g, **knobs)


def _function2d(n, g, knobs):
    from sciml_bench.data.tasks import multi_frequency_2d

    return multi_frequency_2d(n, g)


def _images(channels: int | None):
    from sciml_bench.data.tasks import pattern_images

    return lambda n, g, knobs: pattern_images(n, g, channels or 3, knobs.get("resolution") or 28)


def _topics(n, g, knobs):
    from sciml_bench.data.tasks import token_topics

    return token_topics(n, g, knobs.get("seq_len") or 32)


# model-name globs -> task; the first match wins, the zoo's own batch is the fallback
_TASKS: list[tuple[tuple[str, ...], Callable[[str], Task]]] = [
    (("mlp", "mlp_*"), lambda m: Task("function2d", "rel_l2", _function2d, {"in_features": 2},
                                      description="2D multi-frequency function on [-1, 1]^2")),
    (("pinn_oscillator",), lambda m: Task("oscillator_pinn", "rel_l2", _zoo_batch(m), grad_eval=True,
                                          description="PINN u'' + u = 0, error of u(t) against cos t")),
    (("fno1d", "burgers_transformer"), lambda m: Task("burgers_operator", "rel_l2", _zoo_batch(m),
                                                      description="1D viscous Burgers u0 -> u(T=1), nu = 0.1")),
    (("lorenz_gpt",), lambda m: Task("lorenz_forecast", "rollout_rel_l2", _zoo_batch(m),
                                     description=f"Lorenz-63 next state; error of a {LORENZ_HORIZON}-step "
                                                 "autoregressive rollout")),
    (("unet*", "conv_autoencoder"), lambda m: Task("denoise_fields", "psnr", _zoo_batch(m),
                                                   description="denoising of generated smooth 2D fields")),
    (("simple_cnn", "modern_cnn"), lambda m: Task("pattern_images", "accuracy", _images(1),
                                                  description="10-class stripe patterns (1x28x28) in noise")),
    (("transformer_encoder*", "torch_transformer_encoder"),
     lambda m: Task("token_topics", "accuracy", _topics, description="10-class sequences of topical tokens")),
    (("small_cnn", "vgg11", "resnet*"), lambda m: Task("pattern_images", "accuracy", _images(3),
                                                       description="10-class stripe patterns (3xNxN) in noise")),
]


def get_task(model: str) -> Task:
    """The training task of zoo or plugin model ``model``.

    Families with a curated task get it; any other model trains on its zoo sample batches (their
    generator with fixed data seeds), scored by accuracy for cross-entropy models, PSNR for
    reconstruction and relative L2 error otherwise.
    """
    for patterns, make in _TASKS:
        if any(fnmatch.fnmatch(model, p) for p in patterns):
            return make(model)
    spec = get_model_spec(model)
    metric = ("accuracy" if spec.task == "classification" or spec.loss.__name__ in ("cross_entropy", "lm_loss")
              else "psnr" if spec.task == "reconstruction" else "rel_l2")
    return Task(f"{spec.name}_batches", metric, _zoo_batch(model), description=f"{spec.name}'s generated batches")


# ---------------------------------------------------------------- evaluation

def task_metric(task: Task, model: torch.nn.Module, inputs: Any, targets: Any, knobs: dict[str, Any]) -> float:
    """The task metric of ``model`` on a validation set."""
    if task.metric == "rollout_rel_l2":
        return _rollout_error(model, inputs, targets)
    with torch.no_grad():
        pred = forward(model, inputs).float()
    y = targets
    if task.metric == "accuracy":
        cls = pred.argmax(-1) if pred.shape[:-1] == y.shape else pred.argmax(1)
        return (cls == y).float().mean().item()
    y = y.float()
    if task.metric == "psnr":
        mse = torch.mean((pred - y) ** 2).item()
        rng = (y.max() - y.min()).item()
        return 10 * math.log10(rng * rng / mse) if mse > 0 else math.inf
    return (torch.linalg.vector_norm(pred - y) / torch.linalg.vector_norm(y)).item()


def _rollout_error(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """From the first T - H states of each validation window, feed the model its own next-state
    predictions for H = ``LORENZ_HORIZON`` steps; relative L2 error against the true next H states."""
    t = inputs.shape[1]
    if t <= LORENZ_HORIZON:
        raise ValueError(f"rollout needs windows longer than the horizon {LORENZ_HORIZON}, got seq_len={t}")
    window = inputs[:, :t - LORENZ_HORIZON]
    preds = []
    with torch.no_grad():
        for _ in range(LORENZ_HORIZON):
            nxt = forward(model, window)[:, -1:]
            preds.append(nxt.float())
            window = torch.cat((window, nxt.to(window.dtype)), 1)
    pred = torch.cat(preds, 1)
    ref = targets[:, t - LORENZ_HORIZON - 1:t - 1].float()  # the states after the context
    return (torch.linalg.vector_norm(pred - ref) / torch.linalg.vector_norm(ref)).item()


def burgers_solver_error(n: int, samples: int = 16, seed: int = VAL_SEED) -> float:
    """Discretisation error of the data's own Burgers solver (256 points, dt 1e-2) against a refined
    solve (512 points, dt 2.5e-3) of the same initial conditions: relative L2 on the ``n``-point grid,
    in float64 (the training data are then stored in float32, a further ~1e-7 relative rounding)."""
    from sciml_bench.data.fields import burgers_1d

    f64 = torch.float64
    _, coarse = burgers_1d(samples, n, torch.Generator().manual_seed(seed), dtype=f64)
    _, fine = burgers_1d(samples, n, torch.Generator().manual_seed(seed), n_solver=512, dt=2.5e-3, dtype=f64)
    return (torch.linalg.vector_norm(coarse - fine) / torch.linalg.vector_norm(fine)).item()
