"""ResNets with CIFAR or ImageNet stems: BasicBlock, PreActBlock and Bottleneck, with or without skips."""
from __future__ import annotations

import torch
from torch import nn

from sciml_bench.models.registry import register_model
from sciml_bench.models.cnn import image_batch
from sciml_bench.models.layers import checkpoint_seq, get_act_layer, get_norm_layer


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``expansion = 1``. ``skip=False`` gives the "plain" network."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, act_layer, norm_layer, skip: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.act = act_layer()
        self.shortcut = _shortcut(c_in, planes * self.expansion, stride, norm_layer) if skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(y if self.shortcut is None else y + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (``expansion = 4``), stride on the 3x3 as in torchvision."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, act_layer, norm_layer, skip: bool = True):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = norm_layer(c_out)
        self.act = act_layer()
        self.shortcut = _shortcut(c_in, c_out, stride, norm_layer) if skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.act(y if self.shortcut is None else y + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation BasicBlock (He et al. 2016): norm -> act -> conv, twice; ``expansion = 1``.

    The projection shortcut (when needed) takes the pre-activated input, as in the paper.
    """

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, act_layer, norm_layer, skip: bool = True):
        super().__init__()
        self.bn1 = norm_layer(c_in)
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.act = act_layer()
        self.skip = skip
        self.proj = (nn.Conv2d(c_in, planes, 1, stride, bias=False)
                     if skip and (stride != 1 or c_in != planes) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.bn1(x))
        y = self.conv2(self.act(self.bn2(self.conv1(a))))
        if not self.skip:
            return y
        return y + (x if self.proj is None else self.proj(a))


def _shortcut(c_in: int, c_out: int, stride: int, norm_layer) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm_layer(c_out))


class ResNet(nn.Module):
    """ResNet over four stages (64, 128, 256, 512 planes); all blocks in one Sequential for checkpointing."""

    def __init__(self, block, layers, num_classes: int = 10, in_chans: int = 3, stem: str = "cifar",
                 activation="relu", norm: str = "batch", skip: bool = True):
        super().__init__()
        act_layer, norm_layer = get_act_layer(activation), get_norm_layer(norm, "2d")
        preact = block is PreActBlock
        if stem == "cifar" and preact:  # blocks normalize their own input; a final norm-act closes the net
            self.stem = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        elif stem == "cifar":  # 3x3 stride 1, no max-pool: keeps 32x32 resolution into stage 1
            self.stem = nn.Sequential(nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False), norm_layer(64), act_layer())
        else:  # ImageNet: 7x7 stride 2 + 3x3 max-pool
            self.stem = nn.Sequential(nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False), norm_layer(64), act_layer(),
                                      nn.MaxPool2d(3, 2, 1))
        blocks, c_in = [], 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            for j in range(n):
                blocks.append(block(c_in, planes, 2 if (i > 0 and j == 0) else 1, act_layer, norm_layer, skip))
                c_in = planes * block.expansion
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(norm_layer(c_in), act_layer()) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self.checkpoint_segments = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        x = checkpoint_seq(self.blocks, self.stem(x), self.checkpoint_segments)
        return self.fc(self.pool(self.final(x)).flatten(1))


def _create_resnet(block, layers, resolution: int = 32, **kwargs) -> ResNet:
    return ResNet(block, layers, **kwargs)


def _create_torchvision(arch: str, resolution: int = 224, **kwargs) -> nn.Module:
    import torchvision  # lazy: only the reference entries need it, and nothing is downloaded (weights=None)

    return getattr(torchvision.models, arch)(weights=None, **kwargs)


_RESNET = dict(family="resnet", task="classification", batch=image_batch,
               knobs=("resolution", "activation", "norm", "checkpoint", "channels_last"))
_IMAGENET = dict(resolution=224, num_classes=1000)


@register_model(defaults=dict(resolution=32), **_RESNET)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (BasicBlock [2,2,2,2]), CIFAR stem, 10 classes."""
    return _create_resnet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model(defaults=dict(resolution=32), **_RESNET)
def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (BasicBlock [3,4,6,3]), CIFAR stem, 10 classes."""
    return _create_resnet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model(defaults=dict(resolution=32), **_RESNET)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (Bottleneck [3,4,6,3], expansion 4), CIFAR stem, 10 classes."""
    return _create_resnet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model(defaults=dict(resolution=32), **_RESNET)
def resnet18_plain(**kwargs) -> ResNet:
    """ResNet-18 layout with every skip connection removed ("plain" 18-layer net), CIFAR stem."""
    return _create_resnet(BasicBlock, (2, 2, 2, 2), skip=False, **kwargs)


@register_model(defaults=dict(resolution=32), **_RESNET)
def resnet34_plain(**kwargs) -> ResNet:
    """ResNet-34 layout with every skip connection removed ("plain" 34-layer net), CIFAR stem."""
    return _create_resnet(BasicBlock, (3, 4, 6, 3), skip=False, **kwargs)


@register_model(defaults=dict(resolution=32), **_RESNET)
def preact_resnet18(**kwargs) -> ResNet:
    """Pre-activation ResNet-18 (PreActBlock [2,2,2,2]), CIFAR stem, 10 classes."""
    return _create_resnet(PreActBlock, (2, 2, 2, 2), **kwargs)


@register_model(defaults=_IMAGENET, **_RESNET)
def resnet18_imagenet(**kwargs) -> ResNet:
    """ResNet-18 with the ImageNet stem and 1000 classes (torchvision's configuration)."""
    return _create_resnet(BasicBlock, (2, 2, 2, 2), stem="imagenet", **kwargs)


@register_model(defaults=_IMAGENET, **_RESNET)
def resnet50_imagenet(**kwargs) -> ResNet:
    """ResNet-50 with the ImageNet stem and 1000 classes (torchvision's configuration)."""
    return _create_resnet(Bottleneck, (3, 4, 6, 3), stem="imagenet", **kwargs)


@register_model(family="reference", task="classification", batch=image_batch, defaults=_IMAGENET,
                knobs=("resolution", "channels_last"))
def tv_resnet18(**kwargs) -> nn.Module:
    """Reference: torchvision.models.resnet18(weights=None), to time against ``resnet18_imagenet``."""
    return _create_torchvision("resnet18", **kwargs)


@register_model(family="reference", task="classification", batch=image_batch, defaults=_IMAGENET,
                knobs=("resolution", "channels_last"))
def tv_resnet50(**kwargs) -> nn.Module:
    """Reference: torchvision.models.resnet50(weights=None), to time against ``resnet50_imagenet``."""
    return _create_torchvision("resnet50", **kwargs)
