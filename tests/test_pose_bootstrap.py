"""Multiview bootstrapping as a loop, on generated captures: four cameras around random skeletons, each joint drawn
as a dot of its own colour. An oracle that reads the dots stands in for a good detector (given a wrong joint in one
view of some frames); the whole loop then runs with a tiny trained pose machine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pose_train import make_set

from lightnets.cli import main
from lightnets.errors import LightnetsError
from lightnets.pose import LSP_JOINTS, LSP_LIMBS, bootstrap, project_points, train_pose
from lightnets.pose.bootstrap import bootstrap_rounds, detect_capture, labels_of, read_capture

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, FRAMES, VIEWS = 64, 5, 4
COLOURS = [(40 + 15 * j, 255 - 12 * j, (97 * j) % 256) for j in range(14)]  # one per joint, all distinct
WRONG = (3, 0)  # (joint, view) the oracle gets wrong, by 20 px, in frames 0 and 1


def projection(angle: float) -> np.ndarray:
    """A 3x4 camera 3 m from the origin, looking at it, rotated ``angle`` about the vertical axis."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    intrinsics = np.array([[200.0, 0, SIZE / 2], [0, 200.0, SIZE / 2], [0, 0, 1]])
    return intrinsics @ np.hstack([rotation, np.array([[0], [0], [3000.0]])])


def make_capture(root: Path) -> tuple[Path, np.ndarray, list[np.ndarray]]:
    """``root/capture`` (cameras.json, images/fNN/camV.png; frame 4 lacks cam3), the true 2D points (F, K, V, 2)
    and the cameras."""
    rng = np.random.default_rng(0)
    cameras = [projection(a) for a in np.linspace(0, 2 * np.pi, VIEWS, endpoint=False) + 0.3]
    world = rng.uniform(-300, 300, (FRAMES, 14, 3))
    truth = project_points(world, cameras)  # (F, K, V, 2)
    folder = root / "capture"
    for f in range(FRAMES):
        (folder / "images" / f"f{f:02d}").mkdir(parents=True)
        for v in range(VIEWS):
            if (f, v) == (4, 3):
                continue
            pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
            for j, (x, y) in enumerate(truth[f, :, v]):
                pixels[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = COLOURS[j]
            Image.fromarray(pixels).save(folder / "images" / f"f{f:02d}" / f"cam{v}.png")
    views = [f"cam{v}" for v in range(VIEWS)]
    (folder / "cameras.json").write_text(json.dumps({"views": views, "cameras": {
        name: {"P": camera.tolist()} for name, camera in zip(views, cameras, strict=True)}}))
    return folder, truth, cameras


def oracle(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each joint's dot read off the image: its centre with confidence 1, or confidence 0 where other dots hide it."""
    found, confidence = np.zeros((14, 2)), np.zeros(14)
    for j, colour in enumerate(COLOURS):
        ys, xs = np.nonzero((image == colour).all(axis=-1))
        if len(xs):
            found[j], confidence[j] = (xs.mean() + 0.5, ys.mean() + 0.5), 1.0
    return found, confidence


def test_capture_layout_and_a_missing_view(tmp_path: Path) -> None:
    folder, _, _ = make_capture(tmp_path)
    capture = read_capture(folder)
    assert capture.views == ["cam0", "cam1", "cam2", "cam3"]
    assert [Path(f).name for f in capture.frames] == [f"f{f:02d}" for f in range(FRAMES)]
    assert capture.files[4][3] is None and capture.files[0][0].endswith("f00/cam0.png")
    (folder / "cameras.json").write_text(json.dumps({"views": ["cam0"], "cameras": {"cam0": {"P": [[1] * 4] * 3}}}))
    with pytest.raises(LightnetsError, match="at least 2"):
        read_capture(folder)
    (folder / "cameras.json").write_text(json.dumps({"views": ["cam0", "cam1"], "cameras": {"cam0": {"P": [1]}}}))
    with pytest.raises(LightnetsError, match="cam"):
        read_capture(folder)


def test_the_score_passes_over_frames_with_an_outlier_and_labels_match_the_truth(tmp_path: Path) -> None:
    folder, truth, cameras = make_capture(tmp_path)
    capture = read_capture(folder)
    points, confidence, sizes = detect_capture(capture, oracle)
    assert np.isnan(points[4, :, 3]).all() and (confidence[4, :, 3] == 0).all() and (sizes[4, 3] == 0).all()
    clean = bootstrap(points, capture.cameras, confidence, min_confidence=0.2, threshold=5.0)
    joint, view = WRONG
    points[:2, joint, view, 0] += 20  # a confident, wrong detection in frames 0 and 1
    step = bootstrap(points, capture.cameras, confidence, min_confidence=0.2, threshold=5.0, top_n=3)
    # The outlier is no inlier: it costs frames 0 and 1 exactly its confidence in score, and nothing else changes.
    np.testing.assert_allclose(step.scores, clean.scores - np.array([1, 1, 0, 0, 0]))
    assert len(step.frames) == 3 and (np.diff(step.scores[step.frames]) <= 0).all()
    everything = bootstrap(points, capture.cameras, confidence, min_confidence=0.2, threshold=5.0)
    first = list(everything.frames).index(0)
    labelled = confidence[0, :, :].min(axis=1) > 0  # joints no other dot hides in frame 0
    # RANSAC drops the outlier, so frame 0's reprojected labels agree with the truth in every view, that one too.
    error = np.linalg.norm(everything.labels[first] - truth[0], axis=-1)[labelled]
    assert error.max() < 1.0
    labels = labels_of(capture, step, sizes, LSP_JOINTS, LSP_LIMBS)
    assert len(labels["images"]) == 3 * VIEWS - (1 if 4 in step.frames else 0)
    entry = labels["images"][0]
    f = capture.frames.index(entry["frame"])
    np.testing.assert_allclose(np.array(entry["keypoints"])[:, :2], truth[f, :, int(entry["view"][3:])], atol=1.0)


def test_rounds_retrain_on_the_new_labels_from_the_previous_weights(tmp_path: Path) -> None:
    labelled = make_set(tmp_path / "labelled", count=8)
    first = train_pose(labelled, "mobilenetv1_025", stages=1, input_size=32, val_split=("im00007", "im00008"),
                       out=tmp_path / "detector", epochs=1, batch_size=4, threads=1, amp="none",
                       channels_last=False, progress=False)
    folder, _, _ = make_capture(tmp_path)
    done = bootstrap_rounds(first.run_dir / "last", folder, labelled, tmp_path / "boot", rounds=2, min_confidence=0.0,
                            threshold=1000.0, top_n=2, val_split=("im00007", "im00008"), epochs=1, batch_size=4,
                            threads=1, amp="none", channels_last=False, progress=False)
    assert len(done) == 2
    for r, result in enumerate(done, start=1):
        scores = json.loads((tmp_path / "boot" / f"round{r}" / "scores.json").read_text())
        assert len(scores["scores"]) == FRAMES and len(scores["selected"]) == 2
        labels = json.loads((tmp_path / "boot" / f"round{r}" / "labels.json").read_text())
        config = json.loads((result.train.run_dir / "config.json").read_text())
        assert config["added"][0]["records"] == len(result.added) > 0
        assert config["train_records"] == 6 + len(result.added) and len(result.added) <= len(labels["images"])
    assert json.loads((tmp_path / "boot" / "round2" / "scores.json").read_text())["detector"] == \
        str(done[0].train.run_dir / "last")
    with pytest.raises(LightnetsError, match="already holds"):
        bootstrap_rounds(first.run_dir / "last", folder, labelled, tmp_path / "boot", progress=False)
    with pytest.raises(LightnetsError, match="cannot be resumed"):
        train_pose(None, resume=done[0].train.run_dir, progress=False)
    assert main(["pose", "bootstrap", str(first.run_dir / "last"), "--capture", str(folder), "--data", str(labelled),
                 "--val-split", "im00007,im00008", "--min-confidence", "0", "--threshold", "1000", "--top-n", "1",
                 "--epochs", "1", "--batch-size", "4", "--threads", "1", "--amp", "none", "--no-channels-last",
                 "--quiet", "--out", str(tmp_path / "cli")]) == 0
    assert len(json.loads((tmp_path / "cli" / "round1" / "scores.json").read_text())["selected"]) == 1
