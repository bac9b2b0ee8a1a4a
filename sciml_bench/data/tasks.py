"""Generated learning tasks with known ground truth, for fixed-budget training (sciml_bench.tasks).

The zoo's sample batches are shaped for timing; a few have random labels, which no model can learn.
These generators give those families a task whose answer is known exactly.
"""
from __future__ import annotations

import math

import torch


def multi_frequency_2d(n: int, g: torch.Generator, terms: int = 6, max_freq: int = 2
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression of a fixed smooth multi-frequency function on [-1, 1]^2: points (n, 2), values (n, 1).

    f(x, y) = sum_k sin(pi (a_k x + b_k y) + phi_k) / (1 + |a_k| + |b_k|) with integer frequencies up to
    ``max_freq``;
    the function is the same for every call (its coefficients come from a fixed seed), only the points vary.
    """
    fg = torch.Generator().manual_seed(20240613)
    freq = torch.randint(-max_freq, max_freq + 1, (terms, 2), generator=fg).float()
    phase = 2 * math.pi * torch.rand(terms, generator=fg)
    weight = 1 / (1 + freq.abs().sum(1))
    xy = 2 * torch.rand(n, 2, generator=g) - 1
    f = (torch.sin(math.pi * xy @ freq.T + phase) * weight).sum(1, keepdim=True)
    return xy, f


def pattern_images(n: int, g: torch.Generator, channels: int = 3, size: int = 32, classes: int = 10,
                   noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Image classification where the class sets the orientation and frequency of a stripe pattern.

    Images (n, C, size, size) = cos(2π f_c (x cos θ_c + y sin θ_c) + random phase) with a random
    amplitude per channel, plus Gaussian noise (``noise`` std); labels (n,) int64 in [0, classes).
    """
    y = torch.randint(0, classes, (n,), generator=g)
    theta = math.pi * (y % 5).float() / 5  # 5 orientations
    freq = 2.0 + 2.0 * (y // 5).float()  # x 2 frequency bands (10 classes)
    grid = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    arg = 2 * math.pi * freq[:, None, None] * (xx * torch.cos(theta)[:, None, None]
                                               + yy * torch.sin(theta)[:, None, None]) + phase
    amp = 0.5 + torch.rand(n, channels, 1, 1, generator=g)
    x = amp * torch.cos(arg)[:, None] + noise * torch.randn(n, channels, size, size, generator=g)
    return x, y


def token_topics(n: int, g: torch.Generator, seq_len: int = 32, vocab_size: int = 1000, classes: int = 10,
                 signal: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence classification: each sequence (n, seq_len) int64 draws a fraction ``signal`` of its tokens
    from its class's tokens (id % classes == label) and the rest uniformly; labels (n,) int64."""
    y = torch.randint(0, classes, (n,), generator=g)
    uniform = torch.randint(0, vocab_size, (n, seq_len), generator=g)
    topical = torch.randint(0, vocab_size // classes, (n, seq_len), generator=g) * classes + y[:, None]
    pick = torch.rand(n, seq_len, generator=g) < signal
    return torch.where(pick, topical, uniform), y
