"""Detection on the shared training loop (``lightnets.train.loop.fit``): the batch source, the task that turns a
batch into the CenterNet loss, and the evaluation that decodes the last stage back to the original images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.loader import Shards
from .chip_data import PageCache
from .data import DetectionBatch, DetectionCache
from .decode import Detections, decode
from .loss import centernet_loss
from .metrics import coco_map, kuzushiji_f1
from .targets import build_targets
from .tiles import TileConfig, detect_tiled
from .transforms import DetectionAugment, letterbox_image, network_input


class DetectionBatches:
    """Training batches of a :class:`DetectionCache` for ``fit``: shuffled, augmented on ``device``, normalised.

    ``batch_size`` is the global batch; with ``world_size`` processes each takes its contiguous share. The
    order and augmentation of epoch ``e`` depend only on ``(seed, e, rank)`` (exact resume). ``repeat`` passes
    over the pages per epoch, so a handful of pages still makes epochs of useful length.
    """

    def __init__(self, cache: DetectionCache, batch_size: int, *, augment: DetectionAugment | None = None,
                 device: torch.device | str = "cpu", seed: int = 0, rank: int = 0, world_size: int = 1,
                 repeat: int = 1) -> None:
        self.shards = Shards(len(cache), batch_size, seed, rank, world_size, repeat)
        self.device = torch.device(device)
        self.cache = cache.to(self.device)
        self.batch_size, self.augment = batch_size, augment
        self.steps_per_epoch = self.shards.steps_per_epoch

    def epoch(self, epoch: int) -> Iterator[DetectionBatch]:
        """This process's batches; their ``images`` are the normalised (augmented) float network input."""
        augment_rng = self.shards.generator(epoch, self.device)
        for indices in self.shards.indices(epoch):
            batch = self.cache.batch(indices)
            if self.augment is None:
                yield dataclasses.replace(batch, images=network_input(batch.images))
                continue
            images, boxes, labels, index = self.augment(batch.images, batch.boxes, batch.labels, batch.batch_index,
                                                        generator=augment_rng)
            yield dataclasses.replace(batch, images=images, boxes=boxes, labels=labels, batch_index=index)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class DetectionTask:
    """The loop's task: a :class:`DetectionBatch` of network-ready images -> (CenterNet loss summed over stacks,
    its detached parts ``heatmap``, ``size``, ``offset`` and per-stack ``stack{i}``).

    Targets are built for the model's output size and stride, so any input size works; the loss is computed
    in float32 even under autocast. ``channels_last`` feeds the images in that layout (the model's, chosen by
    the speed probe).
    """

    size_weight: float = 0.1
    offset_weight: float = 1.0
    min_overlap: float = 0.7
    channels_last: bool = False

    def __call__(self, model: nn.Module, batch: DetectionBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        detector = _unwrap(model)
        images = batch.images.contiguous(memory_format=torch.channels_last) if self.channels_last else batch.images
        outputs = [{name: value.float() for name, value in out.items()} for out in model(images)]
        targets = build_targets(batch.boxes, batch.labels, batch.batch_index, batch_size=len(batch.images),
                                num_classes=detector.num_classes, output_size=tuple(outputs[0]["heatmap"].shape[-2:]),
                                stride=detector.output_stride, min_overlap=self.min_overlap,
                                ignore_boxes=batch.ignore_boxes, ignore_index=batch.ignore_index)
        return centernet_loss(outputs, targets, self.size_weight, self.offset_weight)


def _detect(model: nn.Module, images: torch.Tensor, transforms: torch.Tensor, image_sizes: torch.Tensor,
            top_k: int, score_threshold: float) -> list[Detections]:
    device = next(model.parameters()).device
    prediction = {name: value.float() for name, value in model(network_input(images.to(device)))[-1].items()}
    found = decode(prediction, stride=model.output_stride, top_k=top_k, score_threshold=score_threshold,
                   transforms=transforms.to(device), image_sizes=image_sizes.to(device))
    return [Detections(d.boxes.cpu(), d.scores.cpu(), d.labels.cpu()) for d in found]


@torch.inference_mode()
def predict_cache(model: nn.Module, cache: DetectionCache, batch_size: int = 8, top_k: int = 100,
                  score_threshold: float = 0.05) -> list[Detections]:
    """Detections for every cached image, in dataset order, in original image pixels (on the CPU)."""
    was_training = model.training
    model.eval()
    results = []
    try:
        for batch in cache.batches(batch_size):
            results += _detect(model, batch.images, batch.transforms, cache.image_sizes[batch.indices], top_k,
                               score_threshold)
    finally:
        model.train(was_training)
    return results


@torch.inference_mode()
def detect_images(model: nn.Module, images: Sequence[np.ndarray], input_size: int, top_k: int = 100,
                  score_threshold: float = 0.05, tiles: TileConfig | None = None) -> list[Detections]:
    """Detections for RGB uint8 ``(H, W, 3)`` images of any sizes, letterboxed to ``input_size`` as in training,
    or with ``tiles`` detected tile by tile at the tiles' scales (``lightnets.detect.tiles``); boxes are in each
    image's own pixels. The model is put in eval mode."""
    model.eval()
    if tiles is not None:
        return [detect_tiled(model, image, tiles, top_k, score_threshold) for image in images]
    boxed = [letterbox_image(image, input_size) for image in images]
    batch = torch.from_numpy(np.stack([b[0] for b in boxed])).permute(0, 3, 1, 2)
    transforms = torch.tensor([b[1] for b in boxed])
    sizes = torch.tensor([[image.shape[1], image.shape[0]] for image in images], dtype=torch.float32)
    return _detect(model, batch, transforms, sizes, top_k, score_threshold)


def evaluate(model: nn.Module, cache: DetectionCache, batch_size: int = 8, top_k: int = 100,
             score_threshold: float = 0.05, f1_threshold: float = 0.3, with_map: bool = True) -> dict[str, float]:
    """The Kuzushiji F1 (``f1``, ``precision``, ``recall``, counting detections scoring ``f1_threshold`` or more)
    and, with ``with_map``, COCO mAP (``map``, ``map50``, ``map75``, ``map_small/medium/large``) over ``cache``,
    against the dataset's boxes in original image pixels."""
    detections = predict_cache(model, cache, batch_size, top_k, score_threshold)
    return detection_metrics(cache.dataset.records, detections, cache.num_classes, top_k, f1_threshold, with_map)


def detection_metrics(records: Sequence[Any], detections: Sequence[Detections], num_classes: int, top_k: int,
                      f1_threshold: float = 0.3, with_map: bool = True) -> dict[str, float]:
    """The Kuzushiji F1 and (``with_map``) COCO mAP of ``detections`` against the records' boxes, image px."""
    metrics = kuzushiji_f1(records, detections, f1_threshold)
    if with_map:
        metrics.update(coco_map(records, detections, num_classes, max_detections=top_k))
    return metrics


def evaluate_pages(model: nn.Module, pages: PageCache, tiles: TileConfig, top_k: int = 100,
                   score_threshold: float = 0.05, f1_threshold: float = 0.3, with_map: bool = True
                   ) -> dict[str, float]:
    """:func:`evaluate`'s metrics with every page detected tile by tile at full resolution (``detect_tiled``)."""
    was_training = model.training
    try:
        found = [detect_tiled(model, np.asarray(page), tiles, top_k, score_threshold) for page in pages.pages]
    finally:
        model.train(was_training)
    return detection_metrics(pages.dataset.records, found, len(pages.dataset.class_names), top_k, f1_threshold,
                             with_map)


def evaluation(cache: DetectionCache | PageCache, tiles: TileConfig | None = None, **options: Any
               ) -> Callable[[nn.Module], dict[str, float]]:
    """The per-epoch ``evaluate`` for ``fit``: :func:`evaluate` on ``cache`` with ``options``, keys prefixed
    ``val_`` (``val_map50``, ``val_f1``, ...) for the metrics log and the checkpoint monitor; with ``tiles``,
    :func:`evaluate_pages` on full-resolution pages. Every process evaluates the whole set."""

    def run(model: nn.Module) -> dict[str, float]:
        if tiles is not None:
            return {f"val_{name}": value for name, value in evaluate_pages(model, cache, tiles, **options).items()}
        return {f"val_{name}": value for name, value in evaluate(model, cache, **options).items()}

    return run
