"""Tiled inference: tiles cover the image so every box up to the overlap is seen whole, tile pixels are the image's
(padded with the mean colour), the merge keeps one box per object and drops fragments from tile borders, and a
page far larger than a tile is detected box for box by a model that finds white squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lightnets.detect.tiles import TileConfig, detect_tiled, merge_tiles, tile_pixels, tiles_of
from lightnets.detect.transforms import PAD_COLOUR
from lightnets.errors import LightnetsError

SQUARE = 20  # px: 5 output pixels at stride 4


class SquareFinder(nn.Module):
    """A stand-in CenterNet at stride 4: a peak wherever a white ``SQUARE`` px square is, its size and offset
    exact for squares on the 4 px grid."""

    output_stride = 4

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        white = ((x * std + mean).mean(1, keepdim=True) > 0.95).float()
        cells = F.avg_pool2d(white, 4)
        filled = F.avg_pool2d(cells, 5, stride=1, padding=2, count_include_pad=True)
        batch, _, height, width = filled.shape
        return [{"heatmap": 40 * (filled - 0.9), "size": torch.full((batch, 2, height, width), 5.0),
                 "offset": torch.full((batch, 2, height, width), 0.5)}]


def page_with_squares(width: int, height: int, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A grey page with ``count`` white squares on the 4 px grid, at least 48 px apart; and their boxes."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, np.uint8)
    boxes: list[list[float]] = []
    while len(boxes) < count:
        x, y = 4 * rng.integers(1, (width - SQUARE) // 4 - 1), 4 * rng.integers(1, (height - SQUARE) // 4 - 1)
        if all(abs(x - b[0]) >= 48 or abs(y - b[1]) >= 48 for b in boxes):
            image[y:y + SQUARE, x:x + SQUARE] = 255
            boxes.append([x, y, x + SQUARE, y + SQUARE])
    return image, np.array(boxes, dtype=np.float32)


def test_tiles_cover_the_image_and_see_every_box_up_to_the_overlap_whole() -> None:
    config = TileConfig(size=128, overlap=32, scales=(1.0, 0.5))
    tiles = tiles_of(700, 460, config)
    rng = np.random.default_rng(1)
    for index, factor in enumerate((1.0, 0.5)):
        mine = [t for t in tiles if t.scale_index == index]
        assert all(t.side == 128 / factor for t in mine)
        covered = np.zeros((460, 700), bool)
        for t in mine:
            covered[t.top:t.top + t.side, t.left:t.left + t.side] = True
        assert covered.all()
        reach = config.overlap / factor  # image px a box may span and still fit whole in a tile
        for _ in range(200):
            w, h = rng.uniform(1, reach, 2)
            x, y = rng.uniform(0, 700 - w), rng.uniform(0, 460 - h)
            assert any(t.left <= x and t.top <= y and x + w <= t.left + t.side and y + h <= t.top + t.side
                       for t in mine)


def test_tile_pixels_are_the_image_and_the_mean_colour_past_its_edge() -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    tile = tiles_of(150, 100, TileConfig(size=64, overlap=0))[-1]  # flush with the bottom-right corner
    assert (tile.left, tile.top) == (150 - 64, 100 - 64)
    np.testing.assert_array_equal(tile_pixels(Image.fromarray(image), tile, 64), image[36:, 86:])
    past = tile_pixels(Image.fromarray(image), type(tile)(120, 80, 64, 0), 64)
    np.testing.assert_array_equal(past[:20, :30], image[80:, 120:])
    assert (past[30:, 40:] == PAD_COLOUR).all()


def test_the_merge_keeps_one_box_per_object_and_drops_border_fragments() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 3], [50, 50, 60, 60], [0, 0, 10, 10],
                          [20, 0, 30, 10]], dtype=torch.float32)
    scores = torch.tensor([0.8, 0.9, 0.95, 0.5, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 0, 1, 0])
    cut = torch.tensor([False, False, True, False, False, True])
    merged = merge_tiles(boxes, scores, labels, cut, iou=0.5)
    # Box 1 beats its whole duplicate 0; the fragment 2 (IoU 0.3 with it, but wholly inside) goes despite its
    # score; class 1's box and the far boxes stay; the cut box 5 overlaps nothing and stays.
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.5])
    assert merged.labels.tolist() == [0, 1, 0, 0]


def greedy_reference(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cut: torch.Tensor,
                     iou: float) -> list[int]:
    """The merge's rule one box at a time: whole boxes by score, then cut ones; each against the kept boxes."""
    b, s, lab, c = boxes.numpy(), scores.numpy(), labels.numpy(), cut.numpy()
    order = sorted(range(len(b)), key=lambda i: (bool(c[i]), -float(s[i]), i))
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9)
    kept: list[int] = []
    for i in order:
        others = np.array([j for j in kept if lab[j] == lab[i]], dtype=int)
        overlap = (np.minimum(b[i, 2:], b[others, 2:]) - np.maximum(b[i, :2], b[others, :2])).clip(min=0).prod(-1)
        measure = overlap / area[i] if c[i] else overlap / (area[i] + area[others] - overlap)
        if not (measure >= iou).any():
            kept.append(i)
    return sorted(kept, key=lambda i: (-float(s[i]), i))


@pytest.mark.parametrize("seed", range(3))
def test_the_merge_makes_the_greedy_choice_on_crowded_tiles(seed: int) -> None:
    # Clusters of jittered duplicates of many sizes (more than one merge chunk), some cut, two classes.
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(300, 2, generator=g) * 2000
    sizes = 10 + torch.rand(300, 1, generator=g) * 300
    copies = 4
    centre = centres.repeat_interleave(copies, 0) + torch.randn(300 * copies, 2, generator=g) * 8
    half = sizes.repeat_interleave(copies, 0) * (1 + 0.2 * torch.rand(300 * copies, 1, generator=g)) / 2
    boxes = torch.cat([centre - half, centre + half], dim=1)
    # A fragment cut at a tile border near the right edge of each object: far from its left edge, inside it.
    fragments = torch.cat([centres + sizes / 2 - 12, centres + sizes / 2 - 2], dim=1)
    boxes = torch.cat([boxes, fragments])
    scores = torch.rand(len(boxes), generator=g)
    labels = torch.cat([torch.randint(0, 2, (300 * copies,), generator=g), torch.zeros(300, dtype=torch.long)])
    cut = torch.cat([torch.rand(300 * copies, generator=g) < 0.3, torch.ones(300, dtype=torch.bool)])
    merged = merge_tiles(boxes, scores, labels, cut, iou=0.5)
    expected = greedy_reference(boxes, scores, labels, cut, 0.5)
    assert 300 < len(expected) < len(boxes)  # the case merges many boxes and keeps many
    torch.testing.assert_close(merged.boxes, boxes[expected])
    assert merged.labels.tolist() == labels[expected].tolist()


def test_a_large_page_is_found_box_for_box() -> None:
    image, truth = page_with_squares(1100, 740, 40)
    config = TileConfig(size=256, overlap=64, batch=4)
    assert len(tiles_of(1100, 740, config)) > 12  # the page is many tiles, and squares sit on their borders
    found = detect_tiled(SquareFinder(), image, config, top_k=50, score_threshold=0.5)
    assert len(found) == len(truth)
    got = found.boxes.numpy()
    for box in truth:
        best = np.abs(got - box).max(axis=1).min()
        assert best < 0.5
    with pytest.raises(LightnetsError, match="RGB"):
        detect_tiled(SquareFinder(), image[..., 0], config)


def test_bad_tile_settings_are_one_clear_error() -> None:
    with pytest.raises(LightnetsError, match="overlap"):
        TileConfig(size=256, overlap=256)
    with pytest.raises(LightnetsError, match="one size range per tile scale"):
        TileConfig(scales=(1.0, 0.5), ranges=((0, 10),))
