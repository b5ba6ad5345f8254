"""Keypoint training end to end on a tiny generated set: the person crops and their geometry (the joints move with
every augmentation, flips swap left and right, crops map back to the photo exactly), a short run with its files,
resume, evaluation, prediction with drawings, ONNX export, the command line, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets.cli import main
from lightnets.errors import LightnetsError
from lightnets.pose import (
    LSP_FLIP_PAIRS,
    LSP_JOINTS,
    LSP_LIMBS,
    PoseAugment,
    PoseCache,
    evaluate_pose,
    export_pose_machine,
    flip_permutation,
    load_pose_machine,
    predict_files,
    read_keypoint_data,
    train_pose,
    write_keypoints,
)
from lightnets.pose.crops import CONTEXT, centre_crops, crop_batch

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = [0.5] * 3, [0.25] * 3
PERM = flip_permutation(LSP_FLIP_PAIRS, 14)


def make_set(root: Path, count: int = 12, seed: int = 0) -> Path:
    """``root/set``: ``keypoints.json`` (the LSP joints) and ``count`` grey photos of 48-80 px, each joint a white
    3x3 square centred on it; the first photo's person reaches past its left edge (crop padding), and its left
    wrist is unlabelled."""
    rng = np.random.default_rng(seed)
    folder = root / "set"
    (folder / "images").mkdir(parents=True)
    entries = []
    for i in range(count):
        width, height = (int(v) for v in rng.integers(48, 81, 2))
        points = np.stack([rng.uniform(6, width - 6, 14), rng.uniform(6, height - 6, 14)], axis=1)
        if i == 0:
            points[0] = (1.5, height / 2)
        pixels = np.full((height, width, 3), 60, np.uint8)
        for x, y in points:
            pixels[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
        name = f"images/im{i + 1:05d}.png"
        Image.fromarray(pixels).save(folder / name)
        visible = np.ones(14)
        if i == 0:
            visible[LSP_JOINTS.index("left_wrist")] = 0
        entries.append({"file": name, "width": width, "height": height,
                        "keypoints": np.column_stack([points + 0.5, visible]).round(3).tolist()})
    (folder / "keypoints.json").write_text(json.dumps({"joint_names": LSP_JOINTS, "skeleton": LSP_LIMBS,
                                                       "images": entries}))
    return folder


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_set(tmp_path_factory.mktemp("pose"))


@pytest.fixture(scope="module")
def cache(dataset_dir: Path) -> PoseCache:
    return PoseCache(read_keypoint_data(dataset_dir), 32, cache=False)


@pytest.fixture(scope="module")
def trained(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "cpm"
    result = train_pose(dataset_dir, "mobilenetv1_025", stages=2, input_size=32, val_split=("im00010", "im00012"),
                        out=out, epochs=2, batch_size=4, threads=1, amp="none", channels_last=False, progress=False)
    return result


def test_unaugmented_crops_map_back_to_the_photo_exactly(cache: PoseCache) -> None:
    assert cache.images.shape == (12, 3, round(32 * CONTEXT), round(32 * CONTEXT))
    index = list(range(len(cache)))
    _, moved, visible = crop_batch(cache.images, cache.keypoints, cache.visible, 32, MEAN, STD, PERM)
    back = cache.to_image(moved, index)
    assert torch.equal(visible, cache.visible)
    assert (back - cache.original)[visible].abs().max() < 1e-3
    assert not cache.visible[0, LSP_JOINTS.index("left_wrist")]


def bright_spot(image: torch.Tensor) -> torch.Tensor:
    """(x, y) in continuous px of the centroid of a normalised (3, H, W) image's bright spot (its pixels above a
    third of the peak over the background): sub-pixel, as the spot is resampled."""
    weight = image.mean(0) - image.mean(0).median()
    weight = torch.where(weight > weight.max() / 3, weight, torch.zeros_like(weight))
    ys, xs = torch.meshgrid(torch.arange(weight.shape[0]) + 0.5, torch.arange(weight.shape[1]) + 0.5, indexing="ij")
    return torch.stack([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


def test_a_zoomed_centre_crop_magnifies_about_the_centre() -> None:
    images = torch.full((1, 3, 48, 48), 128, dtype=torch.uint8)
    images[0, :, 17:20, 29:32] = 255  # a dot at (30.5, 18.5) cache px: (22.5, 10.5) in the 32 px centre crop
    for zoom in (0.8, 1.0, 1.25):
        spot = bright_spot(centre_crops(images, 32, MEAN, STD, zoom)[0])
        expected = (torch.tensor([22.5, 10.5]) - 16) * zoom + 16
        assert (spot - expected).norm() < 0.3, (zoom, spot)


def test_joints_move_with_every_augmentation_and_flips_swap_sides() -> None:
    """One white dot per image at a known joint: after scale, rotation, shift and flip, the joint's moved label is
    where the dot is now, and a flipped image's dot is labelled with the twin joint."""
    size, joints = 48, 14
    images = torch.full((16, 3, size, size), 128, dtype=torch.uint8)  # grey: as bright as the padding
    g = torch.Generator().manual_seed(1)
    keypoints = 14 + torch.rand(16, joints, 2, generator=g) * 20
    marked = LSP_JOINTS.index("right_wrist")
    for i, (x, y) in enumerate(keypoints[:, marked].tolist()):
        images[i, :, int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 255
        keypoints[i, marked] = torch.tensor([int(x) + 0.5, int(y) + 0.5])
    visible = torch.ones(16, joints, dtype=torch.bool)
    augment = PoseAugment(scale=(0.8, 1.2), rotation=40, shift=0.05, flip=0.5, brightness=0, contrast=0,
                          saturation=0)
    x, moved, _ = crop_batch(images, keypoints, visible, 32, MEAN, STD, PERM, augment, torch.Generator().manual_seed(3))
    twin = LSP_JOINTS.index("left_wrist")
    flipped = 0
    for i in range(16):
        # Which label holds the dot tells whether this image was flipped.
        distance = {j: float((moved[i, j] - bright_spot(x[i])).norm()) for j in (marked, twin)}
        label = min(distance, key=distance.get)
        flipped += label == twin
        assert distance[label] < 0.5, (i, distance)
    assert 0 < flipped < 16  # both cases were drawn


def test_a_short_run_writes_its_files_and_its_checkpoint_serves_every_verb(trained, dataset_dir: Path,
                                                                          tmp_path: Path) -> None:
    run = trained.run_dir
    for name in ("config.json", "metrics.jsonl", "best.safetensors", "last.safetensors", "val_metrics.jsonl"):
        assert (run / name).is_file(), name
    assert len(trained.history) == 2 and all(np.isfinite(h["train_loss"]) for h in trained.history)
    config = json.loads((run / "config.json").read_text())
    assert config["train_records"] == 9 and config["val_records"] == 3 and config["kind"] == "pose"
    final = json.loads((run / "val_metrics.jsonl").read_text().splitlines()[-1])
    assert len(final["per_joint"]) == 14 and 0 <= final["pck"] <= 100

    model = load_pose_machine(run / "last")
    report, records, found = evaluate_pose(model, dataset_dir, ("im00010", "im00012"))
    assert len(records) == 3 and found.shape == (3, 14, 2)
    assert report.at(0.2) == pytest.approx(trained.metrics["pck"] / 100)  # the same last weights, flip test on

    results = predict_files(model, [dataset_dir / "images"], out_dir=tmp_path / "drawn")
    assert len(results) == 12
    path, keypoints, confidence = results[0]
    assert keypoints.shape == (14, 2) and confidence.shape == (14,)
    drawn = Image.open(tmp_path / "drawn" / f"{path.stem}.png")
    assert drawn.size == Image.open(path).size
    # The joints as a file the lifter reads by name: LSP's 14 become its 16, the pelvis the hips' midpoint.
    from lightnets.lift import JOINTS, read_keypoints

    written = read_keypoints(write_keypoints(results, model.checkpoint_meta["joint_names"], tmp_path / "kp.json"))
    assert written.shape == (12, 16, 2)
    names = model.checkpoint_meta["joint_names"]
    hips = names.index("right_hip"), names.index("left_hip")
    assert np.allclose(written[0, JOINTS.index("Hip")], keypoints[list(hips)].mean(axis=0), atol=0.01)
    with pytest.raises(LightnetsError, match="must be a .json"):
        write_keypoints(results, model.checkpoint_meta["joint_names"], path)  # never over an input image

    onnx_path = export_pose_machine(run / "last", tmp_path / "cpm.onnx").path
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)[-1].numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - reference).max() < 1e-4
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["task"] == "pose" and json.loads(meta["class_names"])[-1] == "background"


def test_resume_continues_and_refuses_other_options(trained, dataset_dir: Path) -> None:
    with pytest.raises(LightnetsError, match="stages"):
        train_pose(None, stages=3, resume=trained.run_dir, progress=False)
    more = train_pose(None, resume=trained.run_dir, epochs=3, progress=False)
    assert [h["epoch"] for h in more.history] == [1, 2, 3]


def test_command_line_train_eval_and_errors(dataset_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["pose", "train", str(dataset_dir), "--backbone", "mobilenetv1_025", "--stages", "1",
                 "--input-size", "32", "--val-split", "im00011,im00012", "--epochs", "1", "--batch-size", "4",
                 "--threads", "1", "--amp", "none", "--no-channels-last", "--quiet", "--out", str(out)]) == 0
    assert main(["pose", "eval", str(out), str(dataset_dir), "--names", "im00011,im00012"]) == 0
    printed = capsys.readouterr().out
    assert "PCK@0.2" in printed and "right_ankle" in printed
    assert main(["pose", "eval", str(out), str(dataset_dir), "--names", "im00011,im00012", "--zooms", "0.8,1,1.2"]) == 0
    assert "PCK@0.2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["pose", "eval", str(out), str(dataset_dir), "--zooms", "1,0"])
    assert "zooms > 0" in capsys.readouterr().err
    assert main(["pose", "eval", str(out), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    drawn = tmp_path / "drawn"
    assert main(["pose", "predict", str(out), str(dataset_dir / "images"), "--out", str(drawn),
                 "--keypoints", str(tmp_path / "kp.png")]) == 2
    assert "must be a .json" in capsys.readouterr().err and not drawn.exists()  # refused before any image
    assert main(["pose", "predict", str(out), str(dataset_dir / "images"), "--out", str(drawn),
                 "--keypoints", str(tmp_path / "kp.json")]) == 0
    assert len(json.loads((tmp_path / "kp.json").read_text())["keypoints"]) == 12
    assert main(["pose", "train", str(dataset_dir), "--val-split", "im00011,im00012", "--out", str(out),
                 "--quiet"]) == 2  # a finished run is never overwritten without --exist-ok
    assert (out / "best.safetensors").is_file()


def test_bad_input_is_one_clear_error(dataset_dir: Path, tmp_path: Path, trained) -> None:
    broken = make_set(tmp_path / "broken", count=3)
    (broken / "images" / "im00002.png").write_bytes(b"not a png")
    with pytest.raises(LightnetsError, match="im00002"):
        PoseCache(read_keypoint_data(broken), 32, cache=False)
    with pytest.raises(LightnetsError, match="no image name lies in"):
        train_pose(dataset_dir, "mobilenetv1_025", val_split=("im00100", "im00200"), progress=False,
                   out=tmp_path / "r")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "last.safetensors").write_bytes((trained.run_dir / "last.safetensors").read_bytes())
    meta = json.loads((trained.run_dir / "last.json").read_text())
    (foreign / "last.json").write_text(json.dumps(meta | {"task": "segmentation"}))
    with pytest.raises(LightnetsError, match="not a keypoint checkpoint"):
        load_pose_machine(foreign / "last")
    with pytest.raises(LightnetsError, match="augmentation"):
        PoseAugment(scale=(1.2, 0.8))
