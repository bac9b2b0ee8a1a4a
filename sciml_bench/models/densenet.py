"""DenseNet-BC (Huang et al. 2017), small CIFAR configuration: dense blocks, growth 12, transitions."""
from __future__ import annotations

import torch
from torch import nn

from sciml_bench.models.registry import register_model
from sciml_bench.models.cnn import image_batch
from sciml_bench.models.layers import get_act_layer, get_norm_layer, maybe_checkpoint


class DenseLayer(nn.Module):
    """Bottleneck dense layer: norm-act-conv1x1 (4k) -> norm-act-conv3x3 (k); returns only the k new maps."""

    def __init__(self, c_in: int, growth: int, act_layer, norm_layer):
        super().__init__()
        self.body = nn.Sequential(norm_layer(c_in), act_layer(), nn.Conv2d(c_in, 4 * growth, 1, bias=False),
                                  norm_layer(4 * growth), act_layer(),
                                  nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat(features, 1))


class DenseBlock(nn.Module):
    """``n`` DenseLayers, each reading the concatenation of the block input and all earlier outputs.
    Checkpointing recomputes each layer's concatenation + bottleneck (the memory-efficient DenseNet)."""

    def __init__(self, n: int, c_in: int, growth: int, act_layer, norm_layer):
        super().__init__()
        self.layers = nn.ModuleList([DenseLayer(c_in + i * growth, growth, act_layer, norm_layer) for i in range(n)])
        self.checkpoint = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(maybe_checkpoint(layer, *feats, enabled=self.checkpoint))
        return torch.cat(feats, 1)


class DenseNet(nn.Module):
    """DenseNet-BC for CIFAR: 3x3 stem (2k channels), dense blocks joined by transitions
    (norm-act-conv1x1 with compression 0.5, 2x2 avg-pool), final norm-act, global pool, linear head."""

    def __init__(self, blocks=(16, 16, 16), growth: int = 12, num_classes: int = 10, in_chans: int = 3,
                 compression: float = 0.5, activation="relu", norm: str = "batch"):
        super().__init__()
        act_layer, norm_layer = get_act_layer(activation), get_norm_layer(norm, "2d")
        c = 2 * growth
        self.stem = nn.Conv2d(in_chans, c, 3, padding=1, bias=False)
        stages = []
        for i, n in enumerate(blocks):
            stages.append(DenseBlock(n, c, growth, act_layer, norm_layer))
            c += n * growth
            if i < len(blocks) - 1:
                c_out = int(c * compression)
                stages.append(nn.Sequential(norm_layer(c), act_layer(), nn.Conv2d(c, c_out, 1, bias=False),
                                            nn.AvgPool2d(2)))
                c = c_out
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(norm_layer(c), act_layer(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(c, num_classes)
        self._checkpoint_segments = 0

    @property
    def checkpoint_segments(self) -> int:
        """> 0 checkpoints every dense layer (non-reentrant)."""
        return self._checkpoint_segments

    @checkpoint_segments.setter
    def checkpoint_segments(self, n: int) -> None:
        self._checkpoint_segments = n
        for m in self.modules():
            if isinstance(m, DenseBlock):
                m.checkpoint = n > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.fc(self.final(self.stages(self.stem(x))).flatten(1))


def _create_densenet(resolution: int = 32, **kwargs) -> DenseNet:
    return DenseNet(**kwargs)


@register_model(family="densenet", task="classification", batch=image_batch, defaults=dict(resolution=32),
                knobs=("resolution", "activation", "norm", "checkpoint", "channels_last"))
def densenet_bc100(**kwargs) -> DenseNet:
    """DenseNet-BC-100 for CIFAR (k = 12, 3 dense blocks of 16 bottleneck layers, compression 0.5)."""
    return _create_densenet(**kwargs)
