"""Batches of a split held on the device: shuffled by a seeded permutation, augmented there, normalised."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..errors import LightnetsError
from .augment import Augment, normalize
from .dataset import Split


class ImageBatches:
    """An epoch's worth of ``(images, labels)`` training batches; a ``BatchSource`` for ``train.fit``.

    ``batch_size`` is the global batch: with ``world_size`` processes each takes its contiguous
    share of every global batch, so the processes together see exactly what one process would.
    The permutation and the augmentation of epoch ``e`` depend only on ``(seed, e, rank)``.
    """

    def __init__(self, split: Split, batch_size: int, mean: list[float], std: list[float], *,
                 augment: Augment | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = True) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise LightnetsError(f"batch size must be a positive multiple of the number of processes "
                                 f"({world_size}), got {batch_size}")
        if len(split) < batch_size:
            raise LightnetsError(f"the training split has {len(split)} images, fewer than one batch of {batch_size}; "
                                 "lower --batch-size")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.augment, self.seed, self.rank, self.world_size = augment, seed, rank, world_size
        self.channels_last = channels_last
        self.steps_per_epoch = len(split) // batch_size  # the last partial batch is dropped

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        g = torch.Generator(self.device).manual_seed((self.seed * 1000 + epoch) * 64 + self.rank)
        local = self.batch_size // self.world_size
        for i in range(self.steps_per_epoch):
            idx = order[i * self.batch_size + self.rank * local: i * self.batch_size + (self.rank + 1) * local]
            idx = idx.to(self.device)
            if self.augment is not None:
                x = self.augment(self.images[idx], self.mean, self.std, g, self.channels_last)
            else:
                x = normalize(self.images[idx], self.mean, self.std, self.channels_last)
            yield x, self.labels[idx]


def eval_batches(split: Split, batch_size: int, mean: list[float], std: list[float], *,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 channels_last: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, unaugmented; with several processes each takes every ``world_size``-th batch."""
    for start in range(rank * batch_size, len(split), batch_size * world_size):
        x = split.images[start:start + batch_size].to(device)
        yield normalize(x, mean, std, channels_last), split.labels[start:start + batch_size].to(device)
