"""Training curves plot whatever a task logs: classification's accuracy, detection's loss parts, mAP and F1."""

import pytest
from PIL import Image

from lightnets.train.plots import curve_panels, plot_curves


def history(**series: list[float]) -> list[dict]:
    """Records shaped like the loop's: bookkeeping keys around the task's and the evaluation's metrics."""
    epochs = len(next(iter(series.values())))
    return [{"epoch": e + 1, "step": 10 * (e + 1), "lr": 0.1, **{k: v[e] for k, v in series.items()},
             "epoch_time_s": 2.0, "train_img_s": 400.0, "budget_stop": False} for e in range(epochs)]


CLASSIFICATION = history(train_loss=[2.0, 1.0], train_acc=[30.0, 60.0], val_loss=[1.5, 1.1], val_top1=[40.0, 62.0],
                         val_top5=[80.0, 95.0])
DETECTION = history(train_loss=[40.0, 1.0], train_heatmap=[30.0, 0.6], train_size=[8.0, 0.3], train_offset=[2.0, 0.1],
                    train_stack0=[20.0, 0.5], train_stack1=[20.0, 0.5], val_f1=[0.0, 0.9], val_map=[0.0, 0.4],
                    val_map50=[0.0, 0.8], val_map_large=[-1.0, -1.0])


def test_panels_follow_what_the_task_logged():
    assert curve_panels(CLASSIFICATION) == [("loss", ["train_loss", "val_loss"]), ("training", ["train_acc"]),
                                            ("validation", ["val_top1", "val_top5"])]
    # COCO's -1 (no large objects) and the loop's speed figures are not curves
    assert curve_panels(DETECTION) == [
        ("loss", ["train_loss"]),
        ("training", ["train_heatmap", "train_size", "train_offset", "train_stack0", "train_stack1"]),
        ("validation", ["val_f1", "val_map", "val_map50"]),
    ]
    # a record without evaluation (a run with no validation data) still plots its training keys
    assert curve_panels(history(train_loss=[1.0], train_heatmap=[0.5])) == [("loss", ["train_loss"]),
                                                                             ("training", ["train_heatmap"])]


def test_plot_curves_draws_one_panel_per_group(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_curves(DETECTION, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png" and Image.open(path).size == (1500, 400)  # three 5-inch panels
    assert Image.open(plot_curves(DETECTION[:1], tmp_path / "one.png")).size == (1500, 400)
    assert plot_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
