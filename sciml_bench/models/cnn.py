"""Plain 2D convolutional networks for image classification."""
from __future__ import annotations

import torch
from torch import nn

from sciml_bench.models import register_model
from sciml_bench.models.layers import checkpoint_seq, get_act_layer, get_norm_layer


def conv_norm_act(c_in: int, c_out: int, act_layer, norm_layer, pool: bool = False) -> nn.Sequential:
    """3x3 conv -> norm -> activation (-> 2x2 max-pool). The conv has no bias when a norm follows."""
    norm = norm_layer(c_out)
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=isinstance(norm, nn.Identity)), norm, act_layer()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """CIFAR-style CNN: conv 32-64-128-128-256 with pooling, global average pool, linear head."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10, widths=(32, 64, 128, 128, 256),
                 pools=(False, True, False, True, True), activation="relu", norm: str = "batch"):
        super().__init__()
        act_layer, norm_layer = get_act_layer(activation), get_norm_layer(norm, "2d")
        chans = (in_chans, *widths)
        self.blocks = nn.Sequential(*[conv_norm_act(a, b, act_layer, norm_layer, p)
                                      for a, b, p in zip(chans[:-1], chans[1:], pools)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes)
        self.checkpoint_segments = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        x = checkpoint_seq(self.blocks, x, self.checkpoint_segments)
        return self.head(self.pool(x).flatten(1))


def image_batch(batch_size: int, g: torch.Generator, in_chans: int = 3, resolution: int = 32,
                num_classes: int = 10, **_):
    """Random images (B, C, H, W) in N(0, 1) and integer class labels."""
    x = torch.randn(batch_size, in_chans, resolution, resolution, generator=g)
    y = torch.randint(0, num_classes, (batch_size,), generator=g)
    return x, y


@register_model(family="cnn", task="classification", batch=image_batch,
                defaults=dict(resolution=32), knobs=("resolution", "activation", "norm", "checkpoint", "channels_last"))
def small_cnn(resolution: int = 32, **kwargs) -> SmallCNN:
    """SmallCNN for CIFAR 3x32x32, conv 32-64-128-128-256, AdaptiveAvgPool."""
    return SmallCNN(**kwargs)
