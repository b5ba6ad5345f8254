"""Real-size book pages: the layout is drawn from the fitted book's quantiles, pages fill their text block with
right-to-left columns whose character count follows the book's, every annotated box lies on the page, the same
seed writes the same pages, and the command line writes a data set the detector reads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lightnets.cli import main
from lightnets.detect import read_detection_data
from lightnets.detect.pages import Layout, book_page, book_pages, sample
from lightnets.errors import LightnetsError


def test_sampling_follows_the_quantiles() -> None:
    quantiles = np.quantile(np.random.default_rng(0).exponential(2.0, 20000), np.linspace(0, 1, 101)).tolist()
    draws = sample(quantiles, np.random.default_rng(1), 20000)
    assert np.median(draws) == pytest.approx(quantiles[50], rel=0.05)
    assert np.quantile(draws, 0.9) == pytest.approx(quantiles[90], rel=0.05)


def test_pages_fill_their_block_with_columns_read_right_to_left() -> None:
    layout = Layout.load()
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(2):
        image, chars = book_page(rng, 700, 1100, layout)
        assert image.shape == (1100, 700, 3) and image.dtype == np.uint8
        boxes = np.array(chars, dtype=float)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 0] + boxes[:, 2] <= 700).all() and (boxes[:, 1] + boxes[:, 3] <= 1100).all()
        centres = boxes[:, 0] + boxes[:, 2] / 2
        assert centres[0] > centres[-1]  # the first column is the rightmost
        counts.append(len(chars))
    low, high = layout.chars_per_page[5], layout.chars_per_page[95]
    assert all(low / 2 <= n <= high * 2 for n in counts), (counts, low, high)


def test_characters_that_stray_past_the_edge_are_moved_onto_the_page() -> None:
    """Strays far right (the first column) and far left (the last): every box still lies on the page."""
    layout = Layout.load()
    for stray in (3.0, -3.0):
        _, chars = book_page(np.random.default_rng(0), 500, 800, replace(layout, stray_ratio=[stray] * 101))
        boxes = np.array(chars, dtype=float)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 500).all()


def test_the_command_writes_a_readable_data_set_and_the_seed_decides(tmp_path: Path) -> None:
    assert main(["detect", "synth", str(tmp_path / "a"), "--preset", "kuzushiji", "--page-size", "600x900",
                 "--pages", "1", "--seed", "3"]) == 0
    book_pages(tmp_path / "b", 1, size=(600, 900), seed=3)
    book_pages(tmp_path / "c", 1, size=(600, 900), seed=4)
    read = [json.loads((tmp_path / name / "annotations.json").read_text())["annotations"] for name in "abc"]
    assert read[0] == read[1] and read[0] != read[2]
    data = read_detection_data(tmp_path / "a", class_agnostic=True)
    assert len(data) == 1 and len(data.records[0].boxes) > 20
    with pytest.raises(LightnetsError, match="page size"):
        book_pages(tmp_path / "d", 1, size=(100, 100))
