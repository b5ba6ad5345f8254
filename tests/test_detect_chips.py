"""SNIPER positive chips: every valid box is covered whole at each scale where it is valid, the greedy choice is the
one a brute-force count over all candidate chips makes, ranges apply to the original box size, and bad boxes are
one clear error."""

from __future__ import annotations

import numpy as np
import pytest

from lightnets.detect.chips import (
    ChipConfig,
    chip_origins,
    coverage,
    greedy_cover,
    negative_chips,
    positive_chips,
    processed_pixels,
    valid_at,
)
from lightnets.errors import LightnetsError


def random_page(count: int, width: int = 2400, height: int = 3900, seed: int = 0) -> np.ndarray:
    """``count`` boxes of 16-450 px (log-uniform, most 40-150 as on Kuzushiji pages) inside the page."""
    rng = np.random.default_rng(seed)
    sides = np.exp(rng.uniform(np.log(16), np.log(450), (count, 2)))
    x1 = rng.uniform(0, width - sides[:, 0])
    y1 = rng.uniform(0, height - sides[:, 1])
    return np.stack([x1, y1, x1 + sides[:, 0], y1 + sides[:, 1]], axis=1)


def inside(box: np.ndarray, region: tuple[float, float, float, float]) -> bool:
    return bool(box[0] >= region[0] - 1e-6 and box[1] >= region[1] - 1e-6 and box[2] <= region[2] + 1e-6
                and box[3] <= region[3] + 1e-6)


@pytest.mark.parametrize("count", [1, 150, 3000])
def test_every_valid_box_is_covered_whole_at_each_of_its_scales(count: int) -> None:
    boxes, config = random_page(count), ChipConfig()
    chips = positive_chips(boxes, 2400, 3900, config)
    assert coverage(chips, boxes, 2400, 3900, config) == 1.0
    for index, factor in enumerate(config.factors(2400, 3900)):
        at_scale = [c for c in chips if c.scale_index == index]
        covered = np.concatenate([c.covered for c in at_scale]) if at_scale else np.zeros(0, int)
        assert len(covered) == len(set(covered.tolist()))  # each box is covered once per scale
        assert set(covered.tolist()) == set(np.flatnonzero(valid_at(boxes, index, factor, config)).tolist())
        for chip in at_scale:
            assert chip.scale == pytest.approx(factor)
            assert chip.region[2] - chip.region[0] == pytest.approx(config.size / factor)
            assert all(inside(boxes[j], chip.region) for j in chip.covered)
    assert processed_pixels(chips, config) == len(chips) * 512 * 512


def test_ranges_apply_to_the_original_box_size() -> None:
    """A 100 px box on a 2400x3900 page: valid at 1.667 (32 <= 100 < 150) and not at 3 (>= 80) nor at the coarsest
    scale (< 120), whatever it measures once rescaled."""
    config = ChipConfig()
    box = np.array([[1000.0, 1000.0, 1100.0, 1100.0]])
    factors = config.factors(2400, 3900)
    assert factors[-1] == pytest.approx(512 / 3900)
    assert [bool(valid_at(box, i, f, config)[0]) for i, f in enumerate(factors)] == [False, True, False]
    chips = positive_chips(box, 2400, 3900, config)
    assert [c.scale_index for c in chips] == [1]
    # Too long for a chip once rescaled: a 300 x 20 box (sqrt(wh) = 77) is valid at 3x by size but 900 px long.
    assert not valid_at(np.array([[0.0, 0.0, 300.0, 20.0]]), 0, 3.0, config)[0]


def brute_force_counts(boxes: np.ndarray, xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    counts = np.zeros((len(ys), len(xs)), dtype=int)
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            counts[r, c] = int(((boxes[:, 0] >= x) & (boxes[:, 1] >= y) & (boxes[:, 2] <= x + size)
                                & (boxes[:, 3] <= y + size)).sum())
    return counts


def test_the_greedy_choice_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(3)
    corner = rng.uniform(0, 560, (60, 2))
    boxes = np.hstack([corner, corner + rng.uniform(5, 40, (60, 2))])
    xs, ys = chip_origins(600, 128, 16), chip_origins(600, 128, 16)
    assert xs[-1] == 600 - 128 and np.all(np.diff(xs) > 0)
    taken = greedy_cover(boxes, xs, ys, 128)
    left = np.arange(len(boxes))
    for row, col, covered in taken:
        counts = brute_force_counts(boxes[left], xs, ys, 128)
        assert len(covered) == counts.max() == counts[row, col]
        left = np.setdiff1d(left, covered)
    assert len(left) == 0 and sum(len(c) for _, _, c in taken) == len(boxes)


def test_a_small_image_is_one_chip_and_a_page_without_boxes_has_no_positive_chips() -> None:
    config = ChipConfig(size=512, scales=(2.0, 512.0), ranges=((0.0, 60.0), (40.0, np.inf)))
    boxes = np.array([[10.0, 10.0, 30.0, 30.0], [50.0, 60.0, 250.0, 200.0]])
    chips = positive_chips(boxes, 300, 200, config)
    assert [(c.scale_index, c.covered.tolist()) for c in chips] == [(0, [0]), (1, [1])]
    assert chips[1].region[:2] == (0.0, 0.0) and chips[1].region[2] >= 300  # the whole image, padded
    assert positive_chips(np.zeros((0, 4)), 300, 200, config) == []


def test_bad_boxes_and_settings_are_one_clear_error() -> None:
    with pytest.raises(LightnetsError, match="no size"):
        positive_chips([[10, 10, 10, 50]], 100, 100)
    with pytest.raises(LightnetsError, match="outside"):
        positive_chips([[120, 10, 150, 50]], 100, 100)
    with pytest.raises(LightnetsError, match="finite"):
        positive_chips([[np.nan, 10, 20, 50]], 100, 100)
    with pytest.raises(LightnetsError, match="one valid range per scale"):
        ChipConfig(scales=(3.0, 512.0))
    with pytest.raises(LightnetsError, match="stride"):
        ChipConfig(stride=512)


def test_negative_chips_hold_the_proposals_no_positive_chip_holds() -> None:
    """Proposals (a weak detector's boxes) away from the objects gather into negative chips of at least M each;
    those inside positive chips count for nothing, and a page without boxes yields only negative chips."""
    config = ChipConfig(size=256, stride=32, scales=(1.0,), ranges=((0.0, np.inf),), last_is_size=False)
    rng = np.random.default_rng(0)
    frame = np.column_stack([rng.uniform(1400, 1600, 30), rng.uniform(100, 300, 30)])  # a fooling stripe
    proposals = np.vstack([np.hstack([frame, frame + 20]), [[100, 100, 120, 120]] * 12])
    objects = np.array([[90.0, 90.0, 130.0, 130.0]])
    positives = positive_chips(objects, 2000, 1500, config)
    negatives = negative_chips(proposals, positives, 2000, 1500, config, min_proposals=10)
    assert negatives and all(len(c.covered) >= 10 for c in negatives)
    held = np.concatenate([c.covered for c in negatives])
    assert held.max() < 30  # the 12 proposals on the object, inside its positive chip, are none of them
    assert all(inside(proposals[j], c.region) for c in negatives for j in c.covered)
    empty = positive_chips(np.zeros((0, 4)), 2000, 1500, config)
    only_negative = negative_chips(proposals, empty, 2000, 1500, config, min_proposals=10)
    assert empty == [] and sum(len(c.covered) for c in only_negative) == 42  # now the 12 count as well
    assert negative_chips(proposals, positives, 2000, 1500, config, min_proposals=100) == []
    with pytest.raises(LightnetsError, match="min_proposals"):
        negative_chips(proposals, positives, 2000, 1500, config, min_proposals=0)
