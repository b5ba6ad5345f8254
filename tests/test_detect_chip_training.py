"""Chip training: a chip's labels (valid boxes are objects, the rest ignored, not background), ignored pixels out of
the heatmap loss, the epoch's chips (every positive, negatives drawn afresh per epoch, exact per seed), and a short
chip run whose checkpoint tiles its pages with ``--tiles auto``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_detect_tiles import SquareFinder, page_with_squares

from lightnets.cli import main
from lightnets.detect import read_detection_data, synthetic_pages, train_detector
from lightnets.detect.chip_data import ChipBatches, PageCache, chip_labels, find_negative_chips
from lightnets.detect.chips import Chip, ChipConfig
from lightnets.detect.loss import focal_loss
from lightnets.detect.targets import build_targets

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = ChipConfig(size=64, stride=16, scales=(1.0, 0.5, 128.0), ranges=((0.0, 24.0), (16.0, 60.0), (40.0, np.inf)))


def test_a_chips_labels_are_its_valid_boxes_and_the_rest_is_ignored() -> None:
    boxes = np.array([[10, 10, 20, 20],  # 10 px: valid at scale 1, inside
                      [30, 30, 80, 80],  # 50 px: not valid at scale 1, meets the chip -> ignored
                      [63, 5, 75, 15],  # valid size, but clipped to a 1 px sliver -> ignored
                      [200, 200, 210, 210]], dtype=np.float64)  # elsewhere: not in this chip at all
    chip = Chip((0.0, 0.0, 64.0, 64.0), 1.0, 0, np.array([0]))
    objects, labels, ignored = chip_labels(boxes, np.array([3, 4, 5, 6]), chip, CONFIG)
    np.testing.assert_array_equal(objects, [[10, 10, 20, 20]])
    assert labels.tolist() == [3]
    np.testing.assert_array_equal(ignored, [[30, 30, 64, 64], [63, 5, 64, 15]])


def test_ignored_boxes_leave_the_heatmap_loss() -> None:
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    ignored = torch.tensor([[32.0, 32.0, 64.0, 64.0]])
    targets = build_targets(boxes, torch.tensor([0]), torch.tensor([0]), batch_size=1, num_classes=1,
                            output_size=(16, 16), stride=4, ignore_boxes=ignored, ignore_index=torch.tensor([0]))
    weight = targets["weight"][0, 0]
    assert (weight[8:, 8:] == 0).all() and weight[:8].all() and weight[4, 4] == 1
    logits = torch.full((1, 1, 16, 16), -4.0)
    fooled = logits.clone()
    fooled[..., 8:, 8:] = 4.0  # confident detections on the ignored object: no penalty
    assert focal_loss(fooled, targets["heatmap"], weight=targets["weight"]) == pytest.approx(
        focal_loss(logits, targets["heatmap"], weight=targets["weight"]).item())
    assert focal_loss(fooled, targets["heatmap"]) > focal_loss(logits, targets["heatmap"])


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chips")
    synthetic_pages(root / "pages", 4, size=(320, 240), char_sizes=(10, 40), seed=3)
    return root / "pages"


def test_each_epoch_takes_every_positive_chip_and_draws_fresh_negatives(pages: Path) -> None:
    cache = PageCache(read_detection_data(pages, class_agnostic=True))
    pool = [[Chip((0.0, 0.0, 64.0, 64.0), 1.0, 0, np.zeros(0, int)), Chip((64.0, 0.0, 128.0, 64.0), 1.0, 0,
                                                                             np.zeros(0, int))]] * len(cache)
    source = ChipBatches(cache, CONFIG, 8, negatives=pool, negatives_per_page=1, seed=5)
    first, again = source.chips_of(0), ChipBatches(cache, CONFIG, 8, negatives=pool, negatives_per_page=1,
                                                   seed=5).chips_of(0)
    assert [(i, c.region) for i, c in first] == [(i, c.region) for i, c in again]  # exact per seed and epoch
    assert len(first) == len(source.positives) + len(cache)
    drawn = {tuple((i, c.region) for i, c in source.chips_of(e)[len(source.positives):]) for e in range(6)}
    assert len(drawn) > 1  # negatives are drawn afresh
    stats = source.stats()
    assert 0 < stats["pixel_share"] < 1 and stats["positive_chips"] == len(source.positives)
    batches = list(source.epoch(0))
    assert len(batches) == source.steps_per_epoch
    for batch in batches:
        assert batch.images.shape[1:] == (3, 64, 64) and batch.images.dtype == torch.float32
        assert (batch.boxes >= 0).all() and (batch.boxes <= 64).all()
        assert batch.ignore_boxes is not None and len(batch.ignore_index) == len(batch.ignore_boxes)


def test_a_chip_run_records_its_tiling_and_predicts_with_tiles_auto(pages: Path, tmp_path: Path, capsys) -> None:
    result = train_detector(pages, "mobilenetv1_025", class_agnostic=True, val_split=0.25, chips=CONFIG, epochs=1,
                            batch_size=8, threads=1, amp="none", channels_last=False, progress=False,
                            out=tmp_path / "weak")
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["chips"]["size"] == 64 and config["input_size"] == 64 and 0 < config["chip_stats"]["pixel_share"]
    assert "f1" in result.metrics
    meta = json.loads((result.run_dir / "last.json").read_text())
    assert meta["tiles"]["size"] == 64 and meta["tiles"]["scales"] == [1.0, 0.5, 128.0]
    image = sorted((pages / "images").iterdir())[0]
    capsys.readouterr()
    assert main(["detect", "predict", str(result.run_dir), str(image), "--tiles", "auto", "--out",
                 str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / f"{image.stem}.png").is_file()
    assert main(["detect", "train", str(pages), "--negatives-from", str(result.run_dir), "--out",
                 str(tmp_path / "x")]) == 2
    assert "--negatives-from needs --chips" in capsys.readouterr().err


def test_negative_chips_come_from_where_the_weak_detector_is_fooled(tmp_path: Path) -> None:
    """Squares a detector finds on two pages: annotated on the first (its proposals lie in positive chips, so no
    negatives), unannotated on the second (every proposal is a false positive: negative chips gather them)."""
    image, boxes = page_with_squares(320, 240, 6)
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    Image.fromarray(image).save(tmp_path / "images" / "b.png")
    annotations = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [float(b[0]), float(b[1]), 20.0, 20.0]}
                   for i, b in enumerate(boxes)]
    (tmp_path / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "images/a.png", "width": 320, "height": 240},
                   {"id": 2, "file_name": "images/b.png", "width": 320, "height": 240}],
        "annotations": annotations, "categories": [{"id": 1, "name": "square"}]}))
    cache = PageCache(read_detection_data(tmp_path))
    config = ChipConfig(size=64, stride=16, scales=(1.0,), ranges=((0.0, np.inf),), last_is_size=False)
    pools = find_negative_chips(SquareFinder(), cache, config, min_proposals=1, score_threshold=0.5)
    annotated = [i for i, r in enumerate(cache.dataset.records) if len(r.boxes)][0]
    assert pools[annotated] == []
    fooled = pools[1 - annotated]
    assert fooled and sum(len(c.covered) for c in fooled) == len(boxes)
