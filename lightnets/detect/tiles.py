"""Tiled inference on large images: the image at a few scales, cut into overlapping network-size tiles, each tile
decoded, the boxes mapped back to the image and the duplicates across tiles merged.

Memory is bounded by the tile batch, not the page: each tile is cropped from the original image and resized on
its own, so a 3x pass over a 2400x3900 page never holds the 7200x11700 image. Tiles step by ``size - overlap``
rescaled px (plus tiles flush with the right and bottom edges), so every box up to ``overlap`` px once rescaled is
seen whole by some tile. A box within ``border`` px of a tile edge that is not the image's edge may be cut there:
in the merge it loses to any box it mostly lies in (intersection over its own area), while boxes seen whole
suppress each other by IoU, class by class, best score first. With ``ranges`` (one per scale, ``sqrt(w h)`` in
image px, as SNIPER's valid ranges) each scale keeps only the detections of the sizes it is meant for.

    found = detect_tiled(model, page, TileConfig(scales=(1.0,)))      # native resolution, 512 px tiles
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import LightnetsError
from .chips import chip_origins, scale_factors
from .decode import Detections, decode
from .transforms import PAD_COLOUR, network_input


@dataclass(frozen=True)
class TileConfig:
    """Tile side ``size`` (the network input), ``overlap`` between neighbours (default a quarter of the size) and
    the cut-box ``border`` (tile px); ``scales`` are factors (the last one the longer side in px when
    ``last_is_size``, as SNIPER's 512 / max(W, H)); ``ranges`` one ``[low, high)`` of ``sqrt(w h)`` per scale, or
    None to keep every size; ``batch`` tiles per forward pass; ``iou`` the merge threshold."""

    size: int = 512
    overlap: int | None = None  # None: a quarter of the size
    border: float = 4.0
    scales: tuple[float, ...] = (1.0,)
    ranges: tuple[tuple[float, float], ...] | None = None
    last_is_size: bool = False
    batch: int = 8
    iou: float = 0.5

    def __post_init__(self) -> None:
        if self.overlap is None and isinstance(self.size, int):
            object.__setattr__(self, "overlap", self.size // 4)
        if not (isinstance(self.size, int) and self.size >= 32 and isinstance(self.overlap, int)
                and 0 <= self.overlap < self.size):
            raise LightnetsError(f"tiles need an integer size >= 32 and an overlap in [0, size), got size "
                                 f"{self.size!r} and overlap {self.overlap!r}")
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise LightnetsError(f"tile scales must be finite numbers > 0, got {self.scales!r}")
        if self.ranges is not None and len(self.ranges) != len(self.scales):
            raise LightnetsError(f"give one size range per tile scale: {len(self.scales)} scales, "
                                 f"{len(self.ranges)} ranges")
        if not (isinstance(self.batch, int) and self.batch >= 1) or not 0 < self.iou <= 1:
            raise LightnetsError(f"tile batch must be >= 1 and iou in (0, 1], got {self.batch!r} and {self.iou!r}")

    def factors(self, width: int, height: int) -> list[float]:
        return scale_factors(self.scales, self.last_is_size, width, height)


@dataclass(frozen=True)
class Tile:
    """A tile's square in image px: ``left``, ``top`` (whole px) and ``side``, resized to the tile size."""

    left: int
    top: int
    side: int
    scale_index: int


def tiles_of(width: int, height: int, config: TileConfig) -> list[Tile]:
    """Every tile of a ``width`` x ``height`` image at every scale, finest first."""
    tiles = []
    for index, factor in enumerate(config.factors(width, height)):
        side = max(1, math.ceil(config.size / factor))
        step = config.size - config.overlap
        for y in chip_origins(height * factor, config.size, step):
            for x in chip_origins(width * factor, config.size, step):
                tiles.append(Tile(int(math.floor(x / factor)), int(math.floor(y / factor)), side, index))
    return tiles


def tile_pixels(image: Image.Image, tile: Tile, size: int) -> np.ndarray:
    """The tile cut from ``image`` (the mean colour where it leaves the image), resized to ``size`` px."""
    canvas = Image.new("RGB", (tile.side, tile.side), PAD_COLOUR)
    right, bottom = min(tile.left + tile.side, image.width), min(tile.top + tile.side, image.height)
    if right > tile.left and bottom > tile.top:  # only the part inside: Pillow pads a crop past the edge black
        canvas.paste(image.crop((tile.left, tile.top, right, bottom)), (0, 0))
    if tile.side != size:
        canvas = canvas.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(canvas)


def _batches(items: list[Tile], size: int) -> Iterator[list[Tile]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


TileDetector = Callable[[np.ndarray], list[Detections]]  # (B, S, S, 3) uint8 tiles -> detections in tile px


def model_tiles(model: nn.Module, top_k: int = 100, score_threshold: float = 0.05) -> TileDetector:
    """A PyTorch CenterNet as a :data:`TileDetector` (eval mode, no gradients): ``top_k`` peaks per tile."""
    model.eval()
    device = next(model.parameters()).device

    @torch.inference_mode()
    def run(tiles: np.ndarray) -> list[Detections]:
        pixels = torch.from_numpy(tiles).permute(0, 3, 1, 2).to(device)
        prediction = {name: value.float() for name, value in model(network_input(pixels))[-1].items()}
        found = decode(prediction, stride=model.output_stride, top_k=top_k, score_threshold=score_threshold)
        return [Detections(d.boxes.cpu(), d.scores.cpu(), d.labels.cpu()) for d in found]

    return run


def detect_tiled(detector: nn.Module | TileDetector, image: np.ndarray, config: TileConfig = TileConfig(),
                 top_k: int = 100, score_threshold: float = 0.05) -> Detections:
    """Detections of an RGB uint8 ``(H, W, 3)`` image of any size, in its pixels, best first. ``detector`` is a
    CenterNet (``top_k`` peaks per tile, scores from ``score_threshold``) or any :data:`TileDetector` (ONNX
    Runtime's, say)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise LightnetsError(f"detect_tiled takes one RGB (H, W, 3) image, got shape {image.shape}")
    run = model_tiles(detector, top_k, score_threshold) if isinstance(detector, nn.Module) else detector
    height, width = image.shape[:2]
    photo = Image.fromarray(image)
    boxes, scores, labels, cut = [], [], [], []
    for group in _batches(tiles_of(width, height, config), config.batch):
        for tile, found in zip(group, run(np.stack([tile_pixels(photo, t, config.size) for t in group])),
                               strict=True):
            edges = _inner_edges(tile, width, height)
            near = ((found.boxes[:, :2] < config.border) & edges[:2]).any(1) | \
                ((found.boxes[:, 2:] > config.size - config.border) & edges[2:]).any(1)
            scale = tile.side / config.size
            placed = found.boxes * scale + found.boxes.new_tensor([tile.left, tile.top] * 2)
            placed = torch.minimum(placed.clamp(min=0), placed.new_tensor([width, height] * 2))
            keep = _in_range(placed, config, tile.scale_index)
            boxes.append(placed[keep])
            scores.append(found.scores[keep])
            labels.append(found.labels[keep])
            cut.append(near[keep])
    return merge_tiles(torch.cat(boxes), torch.cat(scores), torch.cat(labels), torch.cat(cut), config.iou)


def _inner_edges(tile: Tile, width: int, height: int) -> torch.Tensor:
    """Which of the tile's left, top, right and bottom edges lie inside the image (a box there may be cut)."""
    return torch.tensor([tile.left > 0, tile.top > 0, tile.left + tile.side < width, tile.top + tile.side < height])


def _in_range(boxes: torch.Tensor, config: TileConfig, index: int) -> torch.Tensor:
    if config.ranges is None:
        return torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    low, high = config.ranges[index]
    size = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    return (size >= low) & (size < high)


def merge_tiles(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cut: torch.Tensor,
                iou: float = 0.5) -> Detections:
    """One detection per object from overlapping tiles: boxes seen whole first (best score first), each kept unless
    a kept box of its class overlaps it by ``iou`` or more; then the possibly cut boxes, each kept unless it lies
    mostly (``iou`` of its own area) inside a kept box of its class. Sorted by score."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = torch.cat([order[~cut[order]], order[cut[order]]])
    boxes, scores, labels, cut = boxes[order], scores[order], labels[order], cut[order]
    kept = torch.zeros(len(boxes), dtype=torch.bool)
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        kept[members] = _greedy_keep(boxes[members], cut[members], iou)
    index = torch.nonzero(kept).flatten()
    index = index[torch.argsort(scores[index], descending=True, stable=True)]
    return Detections(boxes[index], scores[index], labels[index])


MERGE_CHUNK = 512  # boxes compared with their x-neighbours at a time: memory of MERGE_CHUNK x neighbours


def _greedy_keep(boxes: torch.Tensor, cut: torch.Tensor, iou: float) -> torch.Tensor:
    """``merge_tiles``' greedy choice over boxes already in priority order, without a Python step per box.

    Box ``b`` conflicts with an earlier box ``a`` when its measure (IoU for a whole box, the share of its own area
    for a cut one) reaches ``iou``. Only boxes that overlap in x are compared (sorted by their left edge) and only
    pairs that touch are measured, so a page of tens of thousands of boxes takes seconds, not minutes. ``b`` is kept
    unless a kept ``a`` conflicts with it."""
    n = len(boxes)
    if n == 0:
        return torch.zeros(0, dtype=torch.bool)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-9)
    by_left = torch.argsort(boxes[:, 0], stable=True)
    lefts = boxes[by_left, 0].contiguous()
    widest = (boxes[:, 2] - boxes[:, 0]).max()
    later, earlier = [], []
    for start in range(0, n, MERGE_CHUNK):
        rows = by_left[start:start + MERGE_CHUNK]
        low = torch.searchsorted(lefts, boxes[rows, 0].min() - widest, side="right")
        high = torch.searchsorted(lefts, boxes[rows, 2].max(), side="left")
        cols = by_left[low:high]
        mine, theirs = boxes[rows, None], boxes[None, cols]
        touching = ((mine[..., 0] < theirs[..., 2]) & (theirs[..., 0] < mine[..., 2]) &
                    (mine[..., 1] < theirs[..., 3]) & (theirs[..., 1] < mine[..., 3]) & (cols[None] < rows[:, None]))
        b, a = torch.nonzero(touching, as_tuple=True)
        b, a = rows[b], cols[a]  # only the pairs that overlap at all: few beside the x-neighbours compared
        overlap = (torch.minimum(boxes[b, 2:], boxes[a, 2:]) -
                   torch.maximum(boxes[b, :2], boxes[a, :2])).clamp(min=0).prod(-1)
        measure = torch.where(cut[b], overlap / area[b], overlap / (area[b] + area[a] - overlap))
        b, a = b[measure >= iou], a[measure >= iou]
        later.append(b)
        earlier.append(a)
    later_all, earlier_all = torch.cat(later).numpy(), torch.cat(earlier).numpy()
    grouped = np.argsort(later_all, kind="stable")
    later_all, earlier_all = later_all[grouped], earlier_all[grouped]
    keep = np.ones(n, dtype=bool)
    targets = np.unique(later_all)
    starts, ends = np.searchsorted(later_all, targets, "left"), np.searchsorted(later_all, targets, "right")
    for b, lo, hi in zip(targets.tolist(), starts.tolist(), ends.tolist(), strict=True):
        keep[b] = not keep[earlier_all[lo:hi]].any()  # every earlier box is settled: the pairs run in order of b
    return torch.from_numpy(keep)


def tile_config(spec: str | TileConfig | None, input_size: int, recorded: dict | None = None,
                overlap: int | None = None) -> TileConfig | None:
    """What ``--tiles`` asks for: ``none`` (or None), whole images letterboxed; ``auto``, the tiling a checkpoint
    records (``recorded``, from chip training) and else none; or scale factors ``1`` or ``1,0.5``, tiles of the
    network's ``input_size`` at those scales. ``overlap`` replaces the default overlap."""
    if spec is None or isinstance(spec, TileConfig):
        return spec
    text = spec.strip().lower()
    if text == "none":
        return None
    if text == "auto":
        if not recorded:
            return None
        config = TileConfig(**{**recorded, "scales": tuple(recorded["scales"]), "ranges": None if recorded.get(
            "ranges") is None else tuple(tuple(r) for r in recorded["ranges"])})
    else:
        try:
            scales = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise LightnetsError(f"--tiles takes none, auto or scale factors such as 1,0.5; got {spec!r}") from None
        config = TileConfig(size=input_size, scales=scales)
    return config if overlap is None else dataclasses.replace(config, overlap=overlap)
