"""Plugin models for the detection-quality benchmark: an MLP and the same MLP with a real extra op.

``dq_base`` is 20 Linear(256, 256)+ReLU layers; ``dq_plus5`` / ``dq_plus10`` / ``dq_plus20`` add 1 / 2 / 4
more layers (5 / 10 / 20% more FLOPs). The realised slowdown is measured, not assumed: the scorer
uses the within-run paired ratio against ``dq_base`` as the truth.
"""
import torch
from torch import nn

from sciml_bench.models import mse, register_model

WIDTH, BASE_LAYERS = 256, 20


def _batch(batch_size, g, **_):
    return torch.randn(batch_size, WIDTH, generator=g), torch.randn(batch_size, WIDTH, generator=g)


def _mlp(layers: int) -> nn.Module:
    return nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(WIDTH, WIDTH), nn.ReLU())])


for _name, _extra in (("dq_base", 0), ("dq_plus5", 1), ("dq_plus10", 2), ("dq_plus20", 4)):
    register_model(_name, family="test", task="regression", batch=_batch, loss=mse, hidden=True,
                   description=f"detection-quality MLP, {BASE_LAYERS}+{_extra} layers")(
        lambda n=BASE_LAYERS + _extra: _mlp(n))
