"""Synthetic and generated datasets with per-sample CPU work, shaped like a zoo model's batches.

Three pipelines, each doing the kind of work a real loader does per sample, so DataLoader
settings (workers, pinning, prefetch) have something real to hide or expose:

- ``images``: PNG-encoded generated images, decoded with PIL, then RandomCrop(padding=4),
  RandomHorizontalFlip, ToTensor and Normalize (torchvision). For classification models with
  (C, H, W) inputs, C in {1, 3}.
- ``memmap``: arrays generated from the model's own sample batch, written to ``.npy`` files in a
  temporary directory and read lazily row by row through ``numpy.memmap``, then standardized.
  Works for any model whose batch is tensors (PDE fields, point sets, tokens, ...).
- ``timeseries``: sliding windows over one long generated multichannel signal (sum of sines plus
  noise), standardized per window; forecasting targets are the values that follow the window.
  For models with (L, C) or (C, L) inputs.

Nothing is downloaded; everything is generated from a seed.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sciml_bench.cases import DATASETS
from sciml_bench.errors import UsageError

__all__ = ["DATASETS", "ImageDataset", "MemmapDataset", "WindowDataset", "default_start_method", "die_with_loader",
           "make_dataset", "make_loader"]


def _as_list(x: Any) -> list[torch.Tensor]:
    return list(x) if isinstance(x, (tuple, list)) else [x]


def _pack(items: list[torch.Tensor], like: Any) -> Any:
    return type(like)(items) if isinstance(like, (tuple, list)) else items[0]


class ImageDataset(Dataset):
    """Generated PNG images decoded and augmented per sample (torchvision transforms)."""

    def __init__(self, n: int, channels: int, size: int, targets: torch.Tensor, seed: int = 0):
        from PIL import Image
        from torchvision import transforms as T

        if channels not in (1, 3):
            raise UsageError(f"dataset 'images' makes 1- or 3-channel images, the model wants {channels}")
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size] / size
        self.png: list[bytes] = []
        for _ in range(n):  # smooth pattern + noise: compresses like a photo more than pure noise does
            f = rng.uniform(1, 6, size=(channels, 2))
            img = np.stack([np.sin(2 * np.pi * (f[c, 0] * xx + f[c, 1] * yy)) for c in range(channels)], -1)
            img = np.clip(127.5 * (img + 1) + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img[..., 0] if channels == 1 else img).save(buf, format="PNG")
            self.png.append(buf.getvalue())
        self.mode = "L" if channels == 1 else "RGB"
        self.targets = targets
        self.transform = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize([0.5] * channels, [0.25] * channels)])

    def __len__(self) -> int:
        return len(self.png)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.open(io.BytesIO(self.png[i])).convert(self.mode)  # decode
        return self.transform(img), self.targets[i]


class MemmapDataset(Dataset):
    """Rows of ``.npy`` arrays read lazily through ``numpy.memmap`` (opened once per process)."""

    def __init__(self, inputs: Any, targets: Any, root: Path):
        self.root = root
        self.like = (inputs, targets)
        self.specs: list[tuple[str, tuple[int, ...], str, bool]] = []  # (file, shape, dtype, standardize)
        for j, t in enumerate(_as_list(inputs) + _as_list(targets)):
            arr = t.numpy()
            path = root / f"array{j}.npy"
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=arr.dtype, shape=arr.shape)
            mm[:] = arr
            mm.flush()
            del mm
            self.specs.append((str(path), arr.shape, str(arr.dtype), j < len(_as_list(inputs))
                               and np.issubdtype(arr.dtype, np.floating)))
        self.n_inputs = len(_as_list(inputs))
        self._arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return self.specs[0][1][0]

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _arrays=None)  # each worker opens its own memmaps

    def __getitem__(self, i: int):
        if self._arrays is None:
            self._arrays = [np.load(f, mmap_mode="r") for f, *_ in self.specs]
        rows = []
        for a, (_, _, _, standardize) in zip(self._arrays, self.specs):
            row = torch.from_numpy(np.array(a[i]))  # the disk (page cache) read happens here
            if standardize:
                row = (row - row.mean()) / (row.std() + 1e-6)
            rows.append(row)
        return _pack(rows[:self.n_inputs], self.like[0]), _pack(rows[self.n_inputs:], self.like[1])


class WindowDataset(Dataset):
    """Sliding windows over one long generated signal; targets follow the window (forecasting)
    or come from the model's sample batch (classification)."""

    def __init__(self, n: int, length: int, channels: int, channels_first: bool, targets: torch.Tensor,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        self.horizon = targets.shape[1] if targets.is_floating_point() else 0
        self.shift = 1 if self.horizon == length else 0  # same-length target: next-step prediction
        total = n + length + max(self.horizon, 1)
        t = np.arange(total, dtype=np.float32)
        freqs = rng.uniform(0.005, 0.1, size=(channels, 3))
        series = sum(np.sin(2 * np.pi * freqs[:, k, None] * t + rng.uniform(0, 6.3)) for k in range(3))
        self.series = torch.from_numpy((series + 0.1 * rng.standard_normal(series.shape)).astype(np.float32))
        self.n, self.length, self.channels_first, self.targets = n, length, channels_first, targets

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        w = self.series[:, i:i + self.length]  # (C, L)
        mu, sd = w.mean(1, keepdim=True), w.std(1, keepdim=True) + 1e-6
        x = (w - mu) / sd
        if self.horizon:
            start = i + self.length if not self.shift else i + 1
            y = ((self.series[:, start:start + self.horizon] - mu) / sd).T  # (H, C)
        else:
            y = self.targets[i]
        return (x if self.channels_first else x.T.contiguous()), y


def make_dataset(kind: str, sample: tuple[Any, Any], n: int, seed: int = 0) -> tuple[Dataset, Any]:
    """A ``kind`` dataset of ``n`` samples shaped like ``sample`` = (inputs, targets), a CPU batch of
    ``n`` from the model's ``sample_batch``. Returns (dataset, cleanup handle or None).

    Raises UsageError when the pipeline does not fit the model's batch (e.g. images for an MLP).
    """
    inputs, targets = sample
    if kind == "memmap":
        tmp = tempfile.TemporaryDirectory(prefix="sciml_bench_memmap_")
        return MemmapDataset(inputs, targets, Path(tmp.name)), tmp
    if isinstance(inputs, (tuple, list)):
        raise UsageError(f"dataset {kind!r} needs a model with one input tensor; use dataset='memmap'")
    if kind == "images":
        if inputs.dim() != 4 or inputs.shape[2] != inputs.shape[3] or targets.is_floating_point():
            raise UsageError(f"dataset 'images' needs a classification model with square (C, H, W) inputs, "
                             f"got inputs {tuple(inputs.shape[1:])}, targets {targets.dtype}")
        return ImageDataset(n, inputs.shape[1], inputs.shape[2], targets, seed), None
    if kind == "timeseries":
        if inputs.dim() != 3 or not inputs.is_floating_point():
            raise UsageError(f"dataset 'timeseries' needs a model with (L, C) or (C, L) float inputs, "
                             f"got {tuple(inputs.shape[1:])} {inputs.dtype}")
        channels_first = inputs.shape[1] < inputs.shape[2]
        c, length = (inputs.shape[1], inputs.shape[2]) if channels_first else (inputs.shape[2], inputs.shape[1])
        if targets.is_floating_point() and (targets.dim() != 3 or targets.shape[2] != c or channels_first):
            raise UsageError(f"dataset 'timeseries' forecasts (H, C) targets, got {tuple(targets.shape[1:])}")
        return WindowDataset(n, length, c, channels_first, targets, seed), None
    raise UsageError(f"unknown dataset {kind!r}; expected one of: {', '.join(DATASETS)}")


def default_start_method() -> str:
    """The start method a fresh interpreter on this platform gives DataLoader workers (fork on
    Linux up to Python 3.13, forkserver from 3.14, spawn on macOS and Windows)."""
    import multiprocessing

    return multiprocessing.get_all_start_methods()[0]


def die_with_loader(parent: int, worker_id: int) -> None:  # worker_id: DataLoader's worker_init_fn signature
    """A DataLoader worker's first act: the kernel kills it when the process loading through it
    dies (``lifetime.die_with_parent``). A worker stuck in ``__getitem__`` never reaches torch's own
    parent check, and the runner kills a hung case's process with SIGKILL (no clean-up runs), so
    without it that worker would outlive the case. One prctl per worker start (microseconds)."""
    from sciml_bench.lifetime import die_with_parent

    die_with_parent(parent)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                persistent_workers: bool = False, prefetch_factor: int | None = None, seed: int = 0,
                start_method: str | None = None, sampler: torch.utils.data.Sampler | None = None) -> DataLoader:
    """A shuffling DataLoader over ``dataset`` with exactly the given settings (drop_last, seeded).

    Workers start with ``start_method`` (default: :func:`default_start_method`), set explicitly:
    inside a process that was itself spawned, multiprocessing would otherwise inherit "spawn"
    and every worker would re-import torch, which is not what a user's training script pays.
    Each dies with this process (:func:`die_with_loader`).
    """
    import functools
    import multiprocessing
    import os

    ctx = multiprocessing.get_context(start_method or default_start_method()) if num_workers else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                      num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=persistent_workers,
                      prefetch_factor=prefetch_factor, generator=torch.Generator().manual_seed(seed),
                      multiprocessing_context=ctx,
                      worker_init_fn=functools.partial(die_with_loader, os.getpid()) if num_workers else None)
