"""Encoder-decoder conv nets: U-Net (image-to-image) and a convolutional denoising autoencoder."""
from __future__ import annotations

import math

import torch
from torch import nn

from sciml_bench.models.registry import mse, register_model
from sciml_bench.models.layers import get_act_layer, get_norm_layer, maybe_checkpoint


class DoubleConv(nn.Module):
    """(3x3 conv -> norm -> act) twice; the convs have no bias when a norm follows."""

    def __init__(self, c_in: int, c_out: int, act_layer, norm_layer):
        super().__init__()
        n1, n2 = norm_layer(c_out), norm_layer(c_out)
        bias = isinstance(n1, nn.Identity)
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias), n1, act_layer(),
                                  nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias), n2, act_layer())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Up(nn.Module):
    """2x2 ConvTranspose upsampling (halving channels), concatenation with the skip, DoubleConv."""

    def __init__(self, c_in: int, c_out: int, act_layer, norm_layer):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, 2, stride=2)
        self.conv = DoubleConv(c_in // 2 + c_out, c_out, act_layer, norm_layer)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((skip, self.up(x)), 1))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with same-padding: channels ``width`` x (1, 2, 4, 8), bottleneck
    16 x ``width``, max-pool down, ConvTranspose up, concatenated skips. H and W must be divisible by 16.
    With ``checkpoint_segments`` > 0 every stage is checkpointed (non-reentrant)."""

    def __init__(self, in_chans: int = 1, out_chans: int = 1, width: int = 64, activation="relu",
                 norm: str = "batch"):
        super().__init__()
        act_layer, norm_layer = get_act_layer(activation), get_norm_layer(norm, "2d")
        chans = [width * 2 ** i for i in range(5)]  # 64, 128, 256, 512, 1024 at the default width
        self.down = nn.ModuleList([DoubleConv(in_chans, chans[0], act_layer, norm_layer)] +
                                  [DoubleConv(a, b, act_layer, norm_layer) for a, b in zip(chans[:-1], chans[1:])])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([Up(b, a, act_layer, norm_layer) for a, b in zip(chans[-2::-1], chans[:0:-1])])
        self.head = nn.Conv2d(chans[0], out_chans, 1)
        self.checkpoint_segments = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"U-Net input {tuple(x.shape[-2:])} must be divisible by 16")
        ck = self.checkpoint_segments > 0
        skips = []
        for i, stage in enumerate(self.down):
            x = maybe_checkpoint(stage, x if i == 0 else self.pool(x), enabled=ck)
            skips.append(x)
        x = skips.pop()
        for stage in self.up:
            x = maybe_checkpoint(stage, x, skips.pop(), enabled=ck)
        return self.head(x)


class ConvAutoencoder(nn.Module):
    """Convolutional denoising autoencoder: 1x28x28 -> 16x14x14 -> 32x7x7 -> 64x3x3 latent -> back to 1x28x28.

    The decoder's ConvTranspose sizes are chosen so the output is exactly 28x28 (3 -> 7 -> 14 -> 28),
    and a sigmoid keeps it in the [0, 1] range of the clean images.
    """

    def __init__(self, activation="relu", norm: str = "none"):
        super().__init__()
        act_layer, norm_layer = get_act_layer(activation), get_norm_layer(norm, "2d")
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, 2, 1), norm_layer(16), act_layer(),    # 28 -> 14
            nn.Conv2d(16, 32, 3, 2, 1), norm_layer(32), act_layer(),   # 14 -> 7
            nn.Conv2d(32, 64, 3, 2, 0), norm_layer(64), act_layer())   # 7 -> 3
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 3, 2, 0), norm_layer(32), act_layer(),                    # 3 -> 7
            nn.ConvTranspose2d(32, 16, 3, 2, 1, output_padding=1), norm_layer(16), act_layer(),  # 7 -> 14
            nn.ConvTranspose2d(16, 1, 3, 2, 1, output_padding=1), nn.Sigmoid())                  # 14 -> 28

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 1, 28, 28)
        return self.decoder(self.encoder(x))


def _create_unet(resolution: int = 128, **kwargs) -> UNet:
    return UNet(**kwargs)


def _smooth_field(batch_size: int, n: int, g: torch.Generator, modes: int = 4) -> torch.Tensor:
    """Random smooth periodic fields (B, 1, n, n) with ~unit amplitude: a few low Fourier modes."""
    x = torch.arange(n, dtype=torch.float32) * (2 * math.pi / n)
    u = torch.zeros(batch_size, n, n)
    for kx in range(modes):
        for ky in range(modes):
            a = torch.randn(batch_size, 1, 1, generator=g) / (1 + kx + ky)
            ph = 2 * math.pi * torch.rand(batch_size, 1, 1, generator=g)
            u = u + a * torch.cos(kx * x[:, None] + ky * x[None, :] + ph)
    return u[:, None]


def denoise_field_batch(batch_size: int, g: torch.Generator, resolution: int = 128, **_):
    """Field denoising: a smooth field plus Gaussian noise (sigma 0.1) -> the clean field, (B, 1, N, N) each."""
    clean = _smooth_field(batch_size, resolution, g)
    return clean + 0.1 * torch.randn(clean.shape, generator=g), clean


def denoise_digit_batch(batch_size: int, g: torch.Generator, **_):
    """MNIST-shaped denoising: clean blob images in [0, 1] (B, 1, 28, 28), input with noise sigma 0.3, clipped."""
    clean = torch.sigmoid(3 * _smooth_field(batch_size, 28, g, modes=3))
    noisy = (clean + 0.3 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return noisy, clean


_UNET_KNOBS = ("resolution", "width", "activation", "norm", "checkpoint", "channels_last")


@register_model(family="unet", task="regression", batch=denoise_field_batch, loss=mse,
                defaults=dict(resolution=128), knobs=_UNET_KNOBS)
def unet(**kwargs) -> UNet:
    """U-Net 1 -> 1 channel: 64-128-256-512, bottleneck 1024, ConvTranspose up, concatenated skips."""
    return _create_unet(**kwargs)


@register_model(family="unet", task="regression", batch=denoise_field_batch, loss=mse,
                defaults=dict(resolution=128, width=16), knobs=_UNET_KNOBS)
def unet_small(**kwargs) -> UNet:
    """Small U-Net 1 -> 1 channel: width 16 (16-32-64-128, bottleneck 256)."""
    return _create_unet(**kwargs)


@register_model(family="autoencoder", task="reconstruction", batch=denoise_digit_batch, loss=mse,
                knobs=("activation", "norm", "channels_last"))
def conv_autoencoder(**kwargs) -> ConvAutoencoder:
    """Convolutional denoising autoencoder 28x28 -> 3x3x64 latent -> 28x28."""
    return ConvAutoencoder(**kwargs)
