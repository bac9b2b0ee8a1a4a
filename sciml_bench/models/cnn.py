"""Plain convolutional classifiers: 2D (MNIST, CIFAR, VGG-style), 1D time series and 3D volumes."""
from __future__ import annotations

import math

import torch
from torch import nn

from sciml_bench.models.registry import register_model
from sciml_bench.models.layers import checkpoint_seq, get_act_layer, get_norm_layer

_CONV = {"seq": nn.Conv1d, "2d": nn.Conv2d, "3d": nn.Conv3d}
_POOL = {"seq": nn.MaxPool1d, "2d": nn.MaxPool2d, "3d": nn.MaxPool3d}
_GAP = {"seq": nn.AdaptiveAvgPool1d, "2d": nn.AdaptiveAvgPool2d, "3d": nn.AdaptiveAvgPool3d}


def conv_norm_act(c_in: int, c_out: int, act_layer, norm_layer, pool: bool = False, kind: str = "2d",
                  dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv -> norm -> activation (-> 2x max-pool) (-> dropout). The conv has no bias when a norm follows."""
    norm = norm_layer(c_out)
    layers = [_CONV[kind](c_in, c_out, 3, padding=1, bias=isinstance(norm, nn.Identity)), norm, act_layer()]
    if pool:
        layers.append(_POOL[kind](2))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """Conv stages (``widths`` with a pool after stage i when ``pools[i]``), then a head.

    ``head="gap"``: global average pool -> [Linear(fc) -> act ->] Linear(classes).
    ``head="flatten"``: flatten the final map (size ``flat``) -> Linear(fc) -> act -> Linear(classes).
    ``convs_per_stage`` repeats each stage's conv (VGG / ModernCNN style); the pool closes the stage.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 10, widths=(32, 64, 128, 128, 256),
                 pools=(False, True, False, True, True), kind: str = "2d", head: str = "gap", fc: int = 0,
                 flat: int = 0, convs_per_stage: int = 1, dropout: float = 0.0, activation="relu",
                 norm: str = "batch"):
        super().__init__()
        act_layer, norm_layer = get_act_layer(activation), get_norm_layer(norm, kind)
        blocks, c = [], in_chans
        for w, p in zip(widths, pools):
            for j in range(convs_per_stage):
                last = j == convs_per_stage - 1
                blocks.append(conv_norm_act(c, w, act_layer, norm_layer, p and last, kind, dropout if last else 0.0))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = _GAP[kind](1) if head == "gap" else nn.Identity()
        d = c if head == "gap" else flat
        self.head = (nn.Sequential(nn.Linear(d, fc), act_layer(), nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                                   nn.Linear(fc, num_classes)) if fc else nn.Linear(d, num_classes))
        self.checkpoint_segments = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, *spatial) -> (B, classes)
        x = checkpoint_seq(self.blocks, x, self.checkpoint_segments)
        return self.head(self.pool(x).flatten(1))


def _create_convnet(resolution: int | None = None, seq_len: int | None = None, **kwargs) -> ConvNet:
    return ConvNet(**kwargs)  # spatial size only shapes the batch: every head here is size-agnostic or fixed


def image_batch(batch_size: int, g: torch.Generator, in_chans: int = 3, resolution: int = 32,
                num_classes: int = 10, **_):
    """Random images (B, C, H, W) in N(0, 1) and integer class labels."""
    x = torch.randn(batch_size, in_chans, resolution, resolution, generator=g)
    y = torch.randint(0, num_classes, (batch_size,), generator=g)
    return x, y


def mnist_batch(batch_size: int, g: torch.Generator, num_classes: int = 10, **_):
    """MNIST-shaped images (B, 1, 28, 28) in [0, 1] and integer labels."""
    return torch.rand(batch_size, 1, 28, 28, generator=g), torch.randint(0, num_classes, (batch_size,), generator=g)


def timeseries_batch(batch_size: int, g: torch.Generator, seq_len: int = 100, num_classes: int = 5, **_):
    """Noisy sinusoids (B, 1, L) whose class sets the frequency, with integer labels."""
    y = torch.randint(0, num_classes, (batch_size,), generator=g)
    t = torch.linspace(0, 1, seq_len)
    phase = 2 * math.pi * torch.rand(batch_size, 1, generator=g)
    x = torch.sin(2 * math.pi * (y[:, None] + 1) * 2 * t + phase) + 0.3 * torch.randn(batch_size, seq_len, generator=g)
    return x[:, None], y


def volume_batch(batch_size: int, g: torch.Generator, resolution: int = 32, num_classes: int = 10, **_):
    """Random volumes (B, 1, D, H, W) in N(0, 1) and integer labels."""
    x = torch.randn(batch_size, 1, resolution, resolution, resolution, generator=g)
    return x, torch.randint(0, num_classes, (batch_size,), generator=g)


_CNN2D_KNOBS = ("activation", "norm", "checkpoint", "channels_last")


@register_model(family="cnn", task="classification", batch=mnist_batch, knobs=_CNN2D_KNOBS)
def simple_cnn(**kwargs) -> ConvNet:
    """SimpleCNN for MNIST 1x28x28: conv 32-64-128 each with 2x2 max-pool, flatten, fc 256, 10 classes."""
    args = dict(in_chans=1, widths=(32, 64, 128), pools=(True, True, True), head="flatten", fc=256,
                flat=128 * 3 * 3, norm="none")
    return _create_convnet(**dict(args, **kwargs))


@register_model(family="cnn", task="classification", batch=mnist_batch, knobs=_CNN2D_KNOBS)
def modern_cnn(**kwargs) -> ConvNet:
    """ModernCNN for MNIST: two conv-BN-ReLU per stage (32-64-128), max-pool, dropout 0.25, GAP, fc 256."""
    args = dict(in_chans=1, widths=(32, 64, 128), pools=(True, True, True), convs_per_stage=2, fc=256,
                dropout=0.25, norm="batch")
    return _create_convnet(**dict(args, **kwargs))


@register_model(family="cnn", task="classification", batch=image_batch, defaults=dict(resolution=32),
                knobs=("resolution", *_CNN2D_KNOBS))
def small_cnn(**kwargs) -> ConvNet:
    """SmallCNN for CIFAR 3x32x32, conv 32-64-128-128-256, AdaptiveAvgPool."""
    return _create_convnet(**kwargs)


@register_model(family="cnn", task="classification", batch=image_batch, defaults=dict(resolution=32),
                knobs=("resolution", *_CNN2D_KNOBS))
def vgg11(**kwargs) -> ConvNet:
    """VGG-11 style for CIFAR: 64-M-128-M-256x2-M-512x2-M-512x2-M with BatchNorm, GAP, linear head."""
    args = dict(widths=(64, 128, 256, 256, 512, 512, 512, 512),
                pools=(True, True, False, True, False, True, False, True), norm="batch")
    return _create_convnet(**dict(args, **kwargs))


@register_model(family="cnn", task="classification", batch=timeseries_batch, defaults=dict(seq_len=100),
                knobs=("seq_len", "activation", "norm", "checkpoint"))
def cnn1d(**kwargs) -> ConvNet:
    """1D CNN for time series (B, 1, 100): Conv1d 1-64-128-256 with pooling, GAP, 5 classes."""
    args = dict(in_chans=1, num_classes=5, widths=(64, 128, 256), pools=(True, True, False), kind="seq")
    return _create_convnet(**dict(args, **kwargs))


@register_model(family="cnn", task="classification", batch=volume_batch, defaults=dict(resolution=32),
                knobs=("resolution", "activation", "norm", "checkpoint"))
def cnn3d(**kwargs) -> ConvNet:
    """3D CNN for volumes (B, 1, 32, 32, 32): Conv3d 32-64-128 with pooling, GAP, 10 classes."""
    args = dict(in_chans=1, widths=(32, 64, 128), pools=(True, True, False), kind="3d")
    return _create_convnet(**dict(args, **kwargs))
