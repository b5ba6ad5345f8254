"""Training on SNIPER chips: pages kept whole at full resolution, their positive chips (and a pool of negative
chips), and the batch source that cuts each epoch's chips, labels them and augments them on the device.

A chip's labels are every box that meets it, clipped and mapped to chip px. Those valid at the chip's scale are
objects; the others (too small or too large there, or cut to a sliver) are ``ignore_boxes``: the heatmap loss
leaves their pixels out rather than teaching them as background. Each epoch takes every positive chip and, of
each page's negative pool, ``negatives_per_page`` chips drawn afresh (a function of the seed and the epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..data.loader import Shards
from .chips import Chip, ChipConfig, negative_chips, positive_chips, valid_at
from .data import DetectionBatch, DetectionDataset, decode_record_image
from .tiles import Tile, TileConfig, detect_tiled, tile_pixels
from .transforms import DetectionAugment, network_input

MIN_CHIP_BOX = 2.0  # chip px: a valid box clipped narrower than this is ignored rather than taught


class PageCache:
    """Every page of ``dataset`` decoded once at full resolution (Pillow images: a chip is cut without copying
    the page), with its boxes ``(n, 4)`` in page px and labels."""

    def __init__(self, dataset: DetectionDataset, progress: bool = False) -> None:
        self.dataset = dataset
        self.pages: list[Image.Image | None] = [None] * len(dataset)
        position = {record.file: i for i, record in enumerate(dataset.records)}
        for file, data in tqdm(dataset.source.read_many(list(position)), total=len(position), disable=not progress,
                               desc="decoding pages", unit="page"):
            i = position[file]
            self.pages[i] = Image.fromarray(decode_record_image(data, dataset.records[i]))

    def __len__(self) -> int:
        return len(self.pages)


def chip_tile(chip: Chip, size: int) -> Tile:
    """The whole-pixel square of the page a chip is cut from (its region, widened to whole px)."""
    return Tile(int(np.floor(chip.region[0])), int(np.floor(chip.region[1])), int(np.ceil(size / chip.scale)),
                chip.scale_index)


def chip_labels(boxes: np.ndarray, labels: np.ndarray, chip: Chip, config: ChipConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(object boxes, their labels, ignored boxes)`` of one chip in chip px: the page's boxes that meet it,
    clipped; valid at its scale and at least ``MIN_CHIP_BOX`` wide and high once clipped -> objects, else
    ignored."""
    tile = chip_tile(chip, config.size)
    factor = config.size / tile.side
    moved = (boxes - np.array([tile.left, tile.top] * 2)) * factor
    clipped = np.clip(moved, 0, config.size)
    meets = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    valid = valid_at(boxes, chip.scale_index, chip.scale, config)
    big_enough = (clipped[:, 2:] - clipped[:, :2] >= MIN_CHIP_BOX).all(axis=1)
    objects = meets & valid & big_enough
    return clipped[objects], labels[objects], clipped[meets & ~objects]


def page_positives(pages: PageCache, config: ChipConfig) -> list[list[Chip]]:
    """Every page's positive chips (:func:`positive_chips`), in page order."""
    return [positive_chips(r.boxes, r.width, r.height, config) for r in pages.dataset.records]


def pyramid_pixels(width: int, height: int, config: ChipConfig) -> float:
    """Pixels of the whole image at every scale: what training on the full pyramid would process."""
    return float(sum(width * f * height * f for f in config.factors(width, height)))


class ChipBatches:
    """Chip training batches for ``fit``: every positive chip and ``negatives_per_page`` negative chips per page
    each epoch, cut from the pages, labelled (:func:`chip_labels`), augmented on ``device`` and normalised.

    ``positives`` are each page's positive chips (None: computed here, :func:`page_positives`); ``negatives``
    holds each page's pool (None: positives only). The order, the negatives drawn and the
    augmentation of epoch ``e`` depend only on ``(seed, e, rank)`` (exact resume).
    """

    def __init__(self, pages: PageCache, config: ChipConfig, batch_size: int, *,
                 positives: Sequence[Sequence[Chip]] | None = None,
                 negatives: Sequence[Sequence[Chip]] | None = None, negatives_per_page: int = 2,
                 augment: DetectionAugment | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.pages, self.config, self.augment, self.seed = pages, config, augment, seed
        self.device = torch.device(device)
        records = pages.dataset.records
        per_page = positives if positives is not None else page_positives(pages, config)
        self.positives = [(i, chip) for i, chips in enumerate(per_page) for chip in chips]
        self.negatives = [list(pool) for pool in negatives] if negatives is not None else [[] for _ in records]
        self.negative_counts = [min(negatives_per_page, len(pool)) for pool in self.negatives]
        self.shards = Shards(len(self.positives) + sum(self.negative_counts), batch_size, seed, rank, world_size)
        self.batch_size, self.steps_per_epoch = batch_size, self.shards.steps_per_epoch

    def chips_of(self, epoch: int) -> list[tuple[int, Chip]]:
        """The epoch's chips: the positives, then each page's negatives drawn for this epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        drawn = [(i, pool[j]) for i, (pool, n) in enumerate(zip(self.negatives, self.negative_counts, strict=True))
                 for j in (rng.choice(len(pool), n, replace=False) if n else [])]
        return self.positives + drawn

    def stats(self) -> dict[str, float]:
        """Chips per page and the share of the full pyramid's pixels an epoch processes (SNIPER's saving)."""
        records = self.pages.dataset.records
        pyramid = sum(pyramid_pixels(r.width, r.height, self.config) for r in records)
        chips = len(self.positives) + sum(self.negative_counts)
        return {"positive_chips": len(self.positives), "negative_chips_per_epoch": sum(self.negative_counts),
                "chips_per_page": chips / max(len(records), 1),
                "pixel_share": chips * self.config.size ** 2 / max(pyramid, 1.0)}

    def epoch(self, epoch: int) -> Iterator[DetectionBatch]:
        chips = self.chips_of(epoch)
        generator = self.shards.generator(epoch, self.device)
        size = self.config.size
        for indices in self.shards.indices(epoch):
            picked = [chips[int(i)] for i in indices]
            pixels = np.stack([tile_pixels(self.pages.pages[i], chip_tile(chip, size), size) for i, chip in picked])
            boxes, labels, index, ignored, ignored_index = [], [], [], [], []
            for slot, (i, chip) in enumerate(picked):
                record = self.pages.dataset.records[i]
                kept, kept_labels, skip = chip_labels(record.boxes, record.labels, chip, self.config)
                boxes.append(kept), labels.append(kept_labels), index.append(np.full(len(kept), slot))
                ignored.append(skip), ignored_index.append(np.full(len(skip), slot))
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
            # Ignored boxes ride through the augmentation as label -1, so they move and clip with the objects.
            all_boxes = torch.from_numpy(np.concatenate(boxes + ignored)).float().to(self.device)
            all_labels = torch.from_numpy(np.concatenate(labels + [np.full(len(b), -1) for b in ignored])).long()
            all_index = torch.from_numpy(np.concatenate(index + ignored_index)).long()
            all_labels, all_index = all_labels.to(self.device), all_index.to(self.device)
            if self.augment is None:
                x = network_input(images)
            else:
                x, all_boxes, all_labels, all_index = self.augment(images, all_boxes, all_labels, all_index,
                                                                   generator=generator)
            real = all_labels >= 0
            yield DetectionBatch(x, all_boxes[real], all_labels[real], all_index[real],
                                 torch.zeros(len(picked), 4, device=self.device), indices.to(self.device),
                                 all_boxes[~real], all_index[~real])


def chip_tiles(config: ChipConfig) -> TileConfig:
    """The tiling that matches chip training: chip-size tiles at the chip scales, each keeping its valid sizes."""
    return TileConfig(size=config.size, scales=config.scales, ranges=config.ranges, last_is_size=config.last_is_size)


def find_negative_chips(weak: torch.nn.Module, pages: PageCache, config: ChipConfig, *,
                        positives: Sequence[Sequence[Chip]] | None = None, min_proposals: int = 10,
                        score_threshold: float = 0.3, top_k: int = 300, progress: bool = False) -> list[list[Chip]]:
    """Each page's negative-chip pool (SNIPER section 3.2): the weak detector's proposals (tiled at the chip
    scales, scoring ``score_threshold`` or more) gathered by :func:`negative_chips` outside the positive chips
    (``positives`` per page; None: computed here)."""
    pools = []
    tiles = chip_tiles(config)
    records = pages.dataset.records
    per_page = positives if positives is not None else page_positives(pages, config)
    for i in tqdm(range(len(pages)), disable=not progress, desc="negative chips", unit="page"):
        record = records[i]
        found = detect_tiled(weak, np.asarray(pages.pages[i]), tiles, top_k, score_threshold)
        proposals = found.boxes.numpy()
        proposals = proposals[(proposals[:, 2] > proposals[:, 0]) & (proposals[:, 3] > proposals[:, 1])]
        pools.append(negative_chips(proposals, per_page[i], record.width, record.height, config, min_proposals))
    return pools
