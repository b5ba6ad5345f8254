"""A detection run honours a CPU time budget (the recipe's budget_min) and draws its curves."""

import importlib.util

import pytest

from lightnets.detect import DETECTION_RECIPE, read_coco, synthetic_pages, train_detector

pytest.importorskip("faster_coco_eval")


def test_budget_stops_the_run_mid_epoch(tmp_path):
    pages = read_coco(synthetic_pages(tmp_path / "pages", 4, size=(64, 64), char_sizes=(10, 14)), class_agnostic=True)
    recipe = DETECTION_RECIPE.replace(epochs=50, batch_size=2, budget_min=1e-4)  # 6 ms of CPU time
    result = train_detector(pages, "mobilenetv1_025", val_data=pages, class_agnostic=True, input_size=64,
                            recipe=recipe, repeat=20, out=tmp_path / "run", progress=False)
    [record] = result.history  # 40 steps per epoch, 2000 in all: the budget, not the epochs, ended the run
    assert record["budget_stop"] and record["step"] < 40
    assert {"val_map50", "val_f1"} <= set(record)
    assert (tmp_path / "run" / "curves.png").is_file() or importlib.util.find_spec("matplotlib") is None
