"""SNIPER's positive chips (Singh, Najibi and Davis, NeurIPS 2018, section 3.1): K x K crops of a few rescaled copies
of an image, chosen so that every ground-truth box appears whole in some chip at a scale where its size is in that
scale's valid range.

For each scale ``s_i`` the image is rescaled to ``(s_i W, s_i H)``; chip origins step by ``d`` px over it, plus the
positions flush with its right and bottom edges. A box is *valid* at scale ``i`` when ``sqrt(w h)``, measured in the
**original** image, lies in ``R^i = [r_min, r_max)`` (the authors' code applies the ranges so, to the box before
rescaling) and, at every scale but the coarsest, its longer side once rescaled fits in the chip with a stride to
spare (``max(w, h) s_i < K - d - 1``), as in their chip generator. The greedy cover then repeatedly takes the chip
holding the most not-yet-covered valid boxes entirely, until every valid box is covered. Boxes only partly inside
a chip are its labels too (clipped) but do not count as covered; no cap on boxes per image or per chip.

Counting the boxes inside every candidate chip is done without an N x M table: a box lies inside the chip at origin
``(x, y)`` exactly when ``x`` is in ``[x2 - K, x1]`` and ``y`` in ``[y2 - K, y1]``, a rectangle of the origin grid, so
one 2-D prefix sum over the grid counts all boxes for all chips (pages with thousands of boxes stay cheap).

    chips = positive_chips(boxes, width=2400, height=3900)       # SNIPER's defaults: scales 3, 1.667, 512 px
    chips[0].region, chips[0].scale, chips[0].covered            # original px, factor, boxes it covers
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import LightnetsError

# The paper's scales: 3 and 1.667 times, and the whole image with its longer side at 512 px (given as that size).
SNIPER_SCALES: tuple[float, ...] = (3.0, 1.667, 512.0)
# Valid ranges of sqrt(w h) in original px per scale, the authors' COCO configuration (finest first).
SNIPER_RANGES: tuple[tuple[float, float], ...] = ((0.0, 80.0), (32.0, 150.0), (120.0, math.inf))


def scale_factors(scales: Sequence[float], last_is_size: bool, width: int, height: int) -> list[float]:
    """Rescaling factors for a ``width`` x ``height`` image: ``scales``, the last one read as the longer side in px
    (SNIPER's ``512 / max(W, H)``) when ``last_is_size``."""
    factors = list(scales)
    if last_is_size:
        factors[-1] = scales[-1] / max(width, height)
    return factors


@dataclass(frozen=True)
class ChipConfig:
    """Chip side ``size`` and origin step ``stride`` (rescaled px); ``scales`` finest first, the last given as the
    longer side in px when ``last_is_size`` (SNIPER's ``512 / max(W, H)``); ``ranges`` one ``[low, high)`` of
    ``sqrt(w h)`` in original px per scale."""

    size: int = 512
    stride: int = 32
    scales: tuple[float, ...] = SNIPER_SCALES
    ranges: tuple[tuple[float, float], ...] = SNIPER_RANGES
    last_is_size: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size >= 32 and isinstance(self.stride, int)
                and 1 <= self.stride < self.size):
            raise LightnetsError(f"chips need an integer size >= 32 and a stride in [1, size), got size "
                                 f"{self.size!r} and stride {self.stride!r}")
        if not self.scales or len(self.ranges) != len(self.scales):
            raise LightnetsError(f"give one valid range per scale: {len(self.scales)} scales, "
                                 f"{len(self.ranges)} ranges")
        if any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise LightnetsError(f"scales must be finite numbers > 0, got {self.scales!r}")
        if any(not 0 <= low < high for low, high in self.ranges):
            raise LightnetsError(f"each valid range must be 0 <= low < high, got {self.ranges!r}")

    def factors(self, width: int, height: int) -> list[float]:
        """The rescaling factor of each scale for a ``width`` x ``height`` image."""
        return scale_factors(self.scales, self.last_is_size, width, height)


@dataclass
class Chip:
    """A chosen chip: ``region`` ``(x1, y1, x2, y2)`` in original px (it may reach past the image, padded), its
    ``scale`` factor and ``scale_index``, and the indices of the boxes it ``covered`` (valid there, wholly inside)."""

    region: tuple[float, float, float, float]
    scale: float
    scale_index: int
    covered: np.ndarray


def checked_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """``boxes`` as float64 ``(M, 4)`` x1 y1 x2 y2, refused in one line when not finite, of no size or outside."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    if not np.isfinite(boxes).all():
        raise LightnetsError("chip boxes must be finite numbers")
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        raise LightnetsError(f"box {int(np.argmax(bad))} has no size: {boxes[int(np.argmax(bad))].tolist()}")
    outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)
    if outside.any():
        raise LightnetsError(f"box {int(np.argmax(outside))} lies outside the {width}x{height} image: "
                             f"{boxes[int(np.argmax(outside))].tolist()}")
    return boxes


def valid_at(boxes: np.ndarray, index: int, factor: float, config: ChipConfig) -> np.ndarray:
    """Which boxes (original px) are valid at scale ``index`` (rescaled by ``factor``): ``sqrt(w h)`` in its range,
    and below the coarsest scale small enough once rescaled to fit a chip with a stride to spare."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    low, high = config.ranges[index]
    valid = (np.sqrt(w * h) >= low) & (np.sqrt(w * h) < high)
    if index < len(config.scales) - 1:
        valid &= np.maximum(w, h) * factor < config.size - config.stride - 1
    return valid


def chip_origins(extent: float, size: int, stride: int) -> np.ndarray:
    """Origins along one axis of a rescaled image ``extent`` px long: every ``stride`` px, and flush with its end."""
    last = max(math.ceil(extent) - size, 0)
    return np.unique(np.append(np.arange(0, last, stride), last)).astype(np.float64)


def greedy_cover(boxes: np.ndarray, xs: np.ndarray, ys: np.ndarray, size: int, min_count: int = 1
                 ) -> list[tuple[int, int, np.ndarray]]:
    """The greedy cover of ``boxes`` (rescaled px) by ``size`` chips with origins on the grid ``xs`` x ``ys``:
    ``(row, column, covered box indices)`` per chip taken, most boxes first, until no chip holds ``min_count``
    boxes not yet covered. A box no chip holds whole is left out (the caller checks)."""
    # Box j is inside the chip at (xs[c], ys[r]) exactly for c in [c0, c1) and r in [r0, r1).
    c0, c1 = np.searchsorted(xs, boxes[:, 2] - size, "left"), np.searchsorted(xs, boxes[:, 0], "right")
    r0, r1 = np.searchsorted(ys, boxes[:, 3] - size, "left"), np.searchsorted(ys, boxes[:, 1], "right")
    left = np.flatnonzero((c0 < c1) & (r0 < r1))
    taken = []
    while len(left):
        marks = np.zeros((len(ys) + 1, len(xs) + 1), dtype=np.int64)
        for rows, cols, sign in ((r0, c0, 1), (r0, c1, -1), (r1, c0, -1), (r1, c1, 1)):
            np.add.at(marks, (rows[left], cols[left]), sign)
        counts = marks.cumsum(0).cumsum(1)[:-1, :-1]
        row, col = np.unravel_index(int(counts.argmax()), counts.shape)
        if counts[row, col] < min_count:
            break
        inside = (r0[left] <= row) & (row < r1[left]) & (c0[left] <= col) & (col < c1[left])
        taken.append((int(row), int(col), left[inside]))
        left = left[~inside]
    return taken


def positive_chips(boxes: np.ndarray | Sequence[Sequence[float]], width: int, height: int,
                   config: ChipConfig = ChipConfig()) -> list[Chip]:
    """SNIPER's positive chips of one ``width`` x ``height`` image with ``boxes`` (original px), finest scale
    first; every box valid at some scale is covered at each scale where it is valid."""
    boxes = checked_boxes(np.asarray(boxes), width, height)
    chips = []
    for index, factor in enumerate(config.factors(width, height)):
        chips += _cover_at(boxes, np.flatnonzero(valid_at(boxes, index, factor, config)), width, height, index,
                           factor, config)
    return chips


def _cover_at(boxes: np.ndarray, chosen: np.ndarray, width: int, height: int, index: int, factor: float,
              config: ChipConfig, min_count: int = 1) -> list[Chip]:
    """The greedy chips of scale ``index`` over ``boxes[chosen]``, as :class:`Chip` in original px."""
    if len(chosen) < min_count:
        return []
    xs = chip_origins(width * factor, config.size, config.stride)
    ys = chip_origins(height * factor, config.size, config.stride)
    scaled = np.clip(boxes[chosen] * factor, 0, [width * factor, height * factor] * 2)
    side = config.size / factor
    return [Chip((xs[col] / factor, ys[row] / factor, xs[col] / factor + side, ys[row] / factor + side), factor,
                 index, chosen[held]) for row, col, held in greedy_cover(scaled, xs, ys, config.size, min_count)]


def negative_chips(proposals: np.ndarray | Sequence[Sequence[float]], positives: Sequence[Chip], width: int,
                   height: int, config: ChipConfig = ChipConfig(), min_proposals: int = 10) -> list[Chip]:
    """SNIPER's negative chips (section 3.2) of one image: of a weak detector's ``proposals`` (original px, false
    positives mostly, as it was trained on positive chips only), those valid at a scale and not wholly inside a
    positive chip of that scale are covered greedily, keeping the chips that hold at least ``min_proposals``;
    ``covered`` lists the proposals each holds. Regions where the detector is fooled, at the scale it is fooled."""
    if not isinstance(min_proposals, int) or min_proposals < 1:
        raise LightnetsError(f"min_proposals must be an integer >= 1, got {min_proposals!r}")
    proposals = checked_boxes(np.asarray(proposals), width, height)
    chips = []
    for index, factor in enumerate(config.factors(width, height)):
        left = valid_at(proposals, index, factor, config)
        for chip in positives:
            if chip.scale_index == index:
                x1, y1, x2, y2 = chip.region
                left &= ~((proposals[:, 0] >= x1) & (proposals[:, 1] >= y1) & (proposals[:, 2] <= x2)
                          & (proposals[:, 3] <= y2))
        chips += _cover_at(proposals, np.flatnonzero(left), width, height, index, factor, config, min_proposals)
    return chips


def coverage(chips: Sequence[Chip], boxes: np.ndarray, width: int, height: int,
             config: ChipConfig = ChipConfig()) -> float:
    """The share of (box, scale) pairs valid somewhere that the chips cover (1.0 for :func:`positive_chips`)."""
    boxes = checked_boxes(np.asarray(boxes), width, height)
    wanted = covered = 0
    for index, factor in enumerate(config.factors(width, height)):
        valid = set(np.flatnonzero(valid_at(boxes, index, factor, config)).tolist())
        done = set().union(*(set(c.covered.tolist()) for c in chips if c.scale_index == index)) if chips else set()
        wanted, covered = wanted + len(valid), covered + len(valid & done)
    return covered / wanted if wanted else 1.0


def processed_pixels(chips: Sequence[Chip], config: ChipConfig = ChipConfig()) -> int:
    """Pixels a network sees to train on ``chips`` once: ``size``^2 each (SNIPER's cost measure)."""
    return len(chips) * config.size * config.size
