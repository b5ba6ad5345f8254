"""Batches of a split held on the device: shuffled by a seeded permutation, augmented there, normalised."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..errors import LightnetsError
from .augment import Augment, normalize
from .dataset import Split


@dataclass
class Shards:
    """Which cached items each training step of every task takes, so that resume and DDP are exact everywhere.

    Epoch ``e`` shuffles the ``items`` by a permutation seeded by ``(seed, e)`` (``repeat`` passes, concatenated),
    cuts it into global batches of ``batch_size`` (the last partial one dropped) and gives this process its
    contiguous share of each; its augmentation generator is seeded by ``(seed, e, rank)``.
    """

    items: int
    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    repeat: int = 1
    steps_per_epoch: int = field(init=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_size % self.world_size:
            raise LightnetsError(f"batch size must be a positive multiple of the number of processes "
                                 f"({self.world_size}), got {self.batch_size}")
        if self.repeat < 1:
            raise LightnetsError(f"repeat must be >= 1, got {self.repeat}")
        if self.repeat * self.items < self.batch_size:
            raise LightnetsError(f"the training set has {self.items} images, fewer than one batch of "
                                 f"{self.batch_size}; lower --batch-size")
        self.steps_per_epoch = self.repeat * self.items // self.batch_size

    def indices(self, epoch: int) -> Iterator[torch.Tensor]:
        """This process's item indices for each step of ``epoch`` (on the CPU)."""
        order_rng = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        order = torch.cat([torch.randperm(self.items, generator=order_rng) for _ in range(self.repeat)])
        local = self.batch_size // self.world_size
        for step in range(self.steps_per_epoch):
            start = step * self.batch_size + self.rank * local
            yield order[start:start + local]

    def generator(self, epoch: int, device: torch.device) -> torch.Generator:
        """The augmentation generator of ``epoch`` on this process."""
        return torch.Generator(device).manual_seed((self.seed * 1000 + epoch) * 64 + self.rank)


class ImageBatches:
    """An epoch's worth of ``(images, labels)`` training batches; a ``BatchSource`` for ``train.fit``.

    ``batch_size`` is the global batch: with ``world_size`` processes each takes its contiguous
    share of every global batch, so the processes together see exactly what one process would.
    The permutation and the augmentation of epoch ``e`` depend only on ``(seed, e, rank)``.
    """

    def __init__(self, split: Split, batch_size: int, mean: list[float], std: list[float], *,
                 augment: Augment | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = True) -> None:
        self.shards = Shards(len(split), batch_size, seed, rank, world_size)
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.augment, self.channels_last = augment, channels_last
        self.steps_per_epoch = self.shards.steps_per_epoch

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self.shards.generator(epoch, self.device)
        for idx in self.shards.indices(epoch):
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
