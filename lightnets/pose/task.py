"""Keypoints on the shared training loop (``lightnets.train.loop.fit``): the batch source of augmented person crops,
the task that turns a batch into CPM's loss over every stage, and PCK evaluation on the unaugmented crops mapped
back to the photos' pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.loader import Shards
from .crops import IDENTITY, PoseAugment, PoseCache, centre_crops, crop_batch
from .heatmaps import DEFAULT_SIGMA, decode_heatmaps, flip_heatmaps, gaussian_heatmaps, heatmap_loss, unzoom_heatmaps
from .metrics import PCKReport, evaluate_pck

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class PoseBatches:
    """Training batches of a :class:`PoseCache` for ``fit``: ``(images, keypoints, visible)``, shuffled, augmented
    on ``device`` (``augment``; None: the plain centred crops), normalised with ``mean`` and ``std``.

    The order and augmentation of epoch ``e`` depend only on ``(seed, e, rank)`` (exact resume); ``batch_size`` is
    the global batch, each of ``world_size`` processes taking its share.
    """

    def __init__(self, cache: PoseCache, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 flip_perm: Sequence[int], *, augment: PoseAugment | None = None, device: torch.device | str = "cpu",
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.shards = Shards(len(cache), batch_size, seed, rank, world_size)
        self.device = torch.device(device)
        self.cache = cache.to(self.device)
        self.batch_size, self.mean, self.std, self.flip_perm = batch_size, mean, std, flip_perm
        self.augment = augment or IDENTITY
        self.steps_per_epoch = self.shards.steps_per_epoch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        generator = self.shards.generator(epoch, self.device)
        cache = self.cache
        for indices in self.shards.indices(epoch):
            index = indices.to(self.device)
            yield crop_batch(cache.images[index], cache.keypoints[index], cache.visible[index], cache.input_size,
                             self.mean, self.std, self.flip_perm, self.augment, generator)


@dataclass
class PoseTask:
    """The loop's task: ``(images, keypoints, visible)`` -> CPM's loss (:func:`heatmap_loss`, every stage) on
    Gaussian targets of ``sigma`` output pixels; its metrics are each stage's error. ``channels_last`` feeds the
    images in that layout (the model's, chosen by the speed probe)."""

    stride: int
    sigma: float = DEFAULT_SIGMA
    channels_last: bool = False

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, keypoints, visible = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        outputs = model(images)
        height, width = outputs[-1].shape[-2:]
        targets, weights = gaussian_heatmaps(keypoints, visible, (height, width), self.stride, self.sigma)
        return heatmap_loss(outputs, targets, weights)


@torch.inference_mode()
def predict_crops(model: nn.Module, cache: PoseCache, mean: Sequence[float], std: Sequence[float],
                  flip_perm: Sequence[int] | None = None, batch_size: int = 32, zooms: Sequence[float] = (1.0,)
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keypoints (N, K, 2) in the photos' px, confidence (N, K))`` for every cached record from its centred
    crop, decoded from the last stage. With ``flip_perm`` the maps are averaged with those of the mirrored crop
    (flip test-time augmentation); with several ``zooms``, with those of the crop magnified so many times about its
    centre (multi-scale testing, ``unzoom_heatmaps``). The model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stride = model.output_stride
    found, confidence = [], []
    try:
        for start in range(0, len(cache), batch_size):
            index = torch.arange(start, min(start + batch_size, len(cache)))
            crops = cache.images[index.to(cache.images.device)].to(device)
            maps = 0
            for zoom in zooms:
                images = centre_crops(crops, cache.input_size, mean, std, zoom)
                zoomed = model(images)[-1].float()
                if flip_perm is not None:
                    zoomed = (zoomed + flip_heatmaps(model(images.flip(-1))[-1].float(), flip_perm)) / 2
                maps = maps + (zoomed if zoom == 1 else unzoom_heatmaps(zoomed, zoom)) / len(zooms)
            points, peak = decode_heatmaps(maps, stride)
            found.append(cache.to_image(points.cpu(), index))
            confidence.append(peak.cpu())
    finally:
        model.train(was_training)
    return torch.cat(found), torch.cat(confidence)


def evaluate(model: nn.Module, cache: PoseCache, mean: Sequence[float], std: Sequence[float],
             flip_perm: Sequence[int] | None = None, batch_size: int = 32, zooms: Sequence[float] = (1.0,)
             ) -> tuple[PCKReport, torch.Tensor]:
    """Every PCK figure (:func:`evaluate_pck`, torso-normalised, in the photos' px) of the model on the cached
    records, and the predicted keypoints (``flip_perm`` and ``zooms`` as :func:`predict_crops`)."""
    found, _ = predict_crops(model, cache, mean, std, flip_perm, batch_size, zooms)
    visible = cache.visible.cpu().numpy()
    return evaluate_pck(found.numpy(), cache.original.numpy(), visible), found


def evaluation(cache: PoseCache, mean: Sequence[float], std: Sequence[float],
               flip_perm: Sequence[int] | None = None) -> Callable[[nn.Module], dict[str, float]]:
    """The per-epoch ``evaluate`` for ``fit``: PCK at 0.1 and 0.2 (``val_pck``, the monitor), the AUC of the
    curve to 0.5 and the mean pixel error on ``cache``."""

    def run(model: nn.Module) -> dict[str, float]:
        report, _ = evaluate(model, cache, mean, std, flip_perm)
        return {"val_pck": 100 * report.at(0.2), "val_pck_0.1": 100 * report.at(0.1), "val_auc": 100 * report.auc,
                "val_px": report.mean_pixel_error}

    return run


def pck_rows(report: PCKReport, joint_names: Sequence[str], threshold: float = 0.2) -> list[dict[str, float]]:
    """PCK per joint at ``threshold`` (%) with the count scored, for tables and ``val_metrics.jsonl``."""
    column = int(np.flatnonzero(np.isclose(report.thresholds, threshold))[0])
    return [{"joint": name, "pck": float(100 * report.per_joint[column, j]), "scored": int(report.scored[j])}
            for j, name in enumerate(joint_names)]
