"""Segmentation on the shared training loop (``lightnets.train.loop.fit``): the batch source, the task that turns a
batch into the cross-entropy loss, and the evaluation over whole validation images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import Shards
from .augment import SegmentationAugment, normalize_images
from .data import SegmentationCache
from .metrics import IGNORE, confusion_matrix, segmentation_metrics


class SegmentationBatches:
    """Training batches of a :class:`SegmentationCache` for ``fit``: shuffled, augmented on ``device`` (scale, crop,
    flip and colour jitter with the mask following the image), normalised with ``mean`` and ``std``.

    ``batch_size`` is the global batch; with ``world_size`` processes each takes its contiguous share. The order
    and augmentation of epoch ``e`` depend only on ``(seed, e, rank)`` (exact resume). ``repeat`` passes over the
    images per epoch, so a small data set still makes epochs of useful length.
    """

    def __init__(self, cache: SegmentationCache, batch_size: int, mean: list[float], std: list[float], *,
                 augment: SegmentationAugment | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, repeat: int = 1) -> None:
        self.shards = Shards(len(cache), batch_size, seed, rank, world_size, repeat)
        self.device = torch.device(device)
        self.cache = cache.to(self.device)
        self.batch_size, self.mean, self.std, self.augment = batch_size, mean, std, augment
        self.steps_per_epoch = self.shards.steps_per_epoch

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's ``(images, masks)``: normalised float images and int64 masks (``IGNORE`` = void)."""
        augment_rng = self.shards.generator(epoch, self.device)
        for indices in self.shards.indices(epoch):
            images, masks = self.cache.batch(indices)
            if self.augment is None:
                yield normalize_images(images, self.mean, self.std), masks.long()
            else:
                yield self.augment(images, masks, self.mean, self.std, augment_rng)


@dataclass
class SegmentationTask:
    """The loop's task: ``(images, masks)`` -> (cross-entropy over the labelled pixels, with ``class_weights`` when
    given; its detached ``acc``, the batch's pixel accuracy in %). The loss is computed in float32 even under
    autocast; ``channels_last`` feeds the images in that layout (the model's, chosen by the speed probe)."""

    class_weights: torch.Tensor | None = None
    channels_last: bool = False

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, masks = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images).float()
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits, masks, weight=weights, ignore_index=IGNORE)
        with torch.no_grad():
            labelled = masks != IGNORE
            acc = (logits.argmax(1)[labelled] == masks[labelled]).float().mean().nan_to_num(0.0) * 100
        return loss, {"acc": acc}


@torch.inference_mode()
def predict_cache(model: nn.Module, cache: SegmentationCache, mean: list[float], std: list[float],
                  batch_size: int = 4) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(predicted, masks)`` class maps ``(B, H, W)`` for the cached images in order, at the cache's size, with
    the model in eval mode (its mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for images, masks in cache.batches(batch_size):
            yield model(normalize_images(images.to(device), mean, std)).argmax(1), masks.to(device)
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, cache: SegmentationCache, classes: list[str], mean: list[float], std: list[float],
             batch_size: int = 4) -> tuple[dict[str, float], torch.Tensor]:
    """The metrics of :func:`segmentation_metrics` over ``cache`` (whole images, void pixels left out) and the
    confusion matrix they come from."""
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    for predicted, masks in predict_cache(model, cache, mean, std, batch_size):
        confusion += confusion_matrix(predicted, masks, len(classes))
    return segmentation_metrics(confusion, classes), confusion


def evaluation(cache: SegmentationCache, classes: list[str], mean: list[float], std: list[float],
               batch_size: int = 4) -> Callable[[nn.Module], dict[str, float]]:
    """The per-epoch ``evaluate`` for ``fit``: mIoU, pixel and mean accuracy on ``cache``, keys prefixed ``val_``
    (``val_miou`` is the monitor). Per-class IoUs are left to the final evaluation, to keep the log short."""

    def run(model: nn.Module) -> dict[str, float]:
        metrics, _ = evaluate(model, cache, classes, mean, std, batch_size)
        return {f"val_{name}": metrics[name] for name in ("miou", "pixel_acc", "mean_acc")}

    return run
