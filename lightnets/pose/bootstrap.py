"""Multiview bootstrapping (Simon et al., CVPR 2017) as a loop: a detector labels unlabelled calibrated views, the
best-triangulated frames become new labels, and the detector is retrained on them with the labelled data.

A *capture* is a folder or archive with ``cameras.json`` and one image per frame and view:

    cameras.json          {"views": ["cam0", "cam1", ...],
                           "cameras": {"cam0": {"P": [[...], [...], [...]]}, ...}}      a 3x4 projection matrix,
                           or {"R": 3x3, "T": [3], "f": [2], "c": [2], "k": [3], "p": [2]} (pinhole + distortion)
    images/FRAME/VIEW.jpg one folder per frame, one file per view named as in "views"

Each round: detect the joints in every view (the whole image as the person's box: crop captures to the person
first), drop detections under λ (``min_confidence``), triangulate each joint by RANSAC over view pairs, score each
frame by its inliers' summed confidence, keep the ``top_n`` best, and write their reprojected points in every view
as ``roundR/labels.json`` (a keypoints.json whose files are the capture's) with ``roundR/scores.json``; then
retrain from the detector's weights on the labelled data plus those labels (``roundR/train``), the next round's
detector.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from .._io import write_text_atomically
from ..data import decode_image
from ..detect.files import IMAGE_SUFFIXES, FileSource
from ..errors import LightnetsError
from ..lift.cameras import Camera
from ..train.run import RunResult
from .infer import find_keypoints, load_pose_machine
from .keypoints import KeypointDataset, labels_on_source, name_key, read_keypoint_data
from .multiview import Bootstrap, CameraLike, bootstrap
from .train import train_pose

Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # RGB image -> (keypoints (K, 2), confidence (K,))
CAMERA_FIELDS = ("R", "T", "f", "c", "k", "p")


@dataclass
class Capture:
    """Calibrated views of unlabelled frames: ``files[f][v]`` is frame ``frames[f]``'s image in view ``views[v]``
    (None where it is missing)."""

    source: FileSource
    views: list[str]
    cameras: list[CameraLike]
    frames: list[str]
    files: list[list[str | None]]


def _camera(entry: object, view: str) -> CameraLike:
    if isinstance(entry, dict) and "P" in entry:
        matrix = np.asarray(entry["P"], dtype=np.float64)
        if matrix.shape != (3, 4) or not np.isfinite(matrix).all():
            raise LightnetsError(f"cameras.json: view {view!r} has a P that is not a finite 3x4 matrix")
        return matrix
    if isinstance(entry, dict) and all(k in entry for k in CAMERA_FIELDS):
        return Camera(*(np.asarray(entry[k], dtype=np.float64) for k in CAMERA_FIELDS))
    raise LightnetsError(f"cameras.json: view {view!r} needs a 3x4 'P' or all of {', '.join(CAMERA_FIELDS)}")


def read_capture(path: str | Path) -> Capture:
    """The capture at ``path`` (see the module's layout). Frames missing a view keep it as None; a capture
    without ``cameras.json``, with fewer than 2 views, or without images is one clear error."""
    source = FileSource(path)
    name = source.only([n for n in source.names if PurePosixPath(n).name == "cameras.json"], "cameras.json",
                       "a single cameras.json")
    try:
        spec = json.loads(source.read(name))
        views = [str(v) for v in spec["views"]]
        cameras = [_camera(spec["cameras"][v], v) for v in views]
    except (ValueError, KeyError, TypeError) as err:  # json's JSONDecodeError is a ValueError
        raise LightnetsError(f"{name} in {source.path} is not a camera file (views, cameras per view): "
                             f"{type(err).__name__}: {err}") from None
    if len(views) < 2:
        raise LightnetsError(f"{name} in {source.path} lists {len(views)} view(s); triangulation needs at least 2")
    by_frame: dict[str, dict[str, str]] = {}
    for member in source.names:
        pure = PurePosixPath(member)
        if pure.suffix.lower() in IMAGE_SUFFIXES and pure.stem in views and pure.parent.name:
            by_frame.setdefault(pure.parent.as_posix(), {})[pure.stem] = member
    if not by_frame:
        raise LightnetsError(f"{source.path} holds no images named FRAME/VIEW (views {', '.join(views)})")
    frames = sorted(by_frame, key=lambda f: name_key(PurePosixPath(f).name))
    files = [[by_frame[f].get(v) for v in views] for f in frames]
    return Capture(source, views, cameras, frames, files)


def detect_capture(capture: Capture, detector: Detector, progress: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keypoints (F, K, V, 2), confidence (F, K, V), sizes (F, V, 2) width and height)`` of the detector in
    every view of every frame; a missing view is NaN with confidence 0 and size 0."""
    where = {name: (f, v) for f, row in enumerate(capture.files) for v, name in enumerate(row) if name}
    frames, views = len(capture.frames), len(capture.views)
    points = confidence = None
    sizes = np.zeros((frames, views, 2), dtype=np.int64)
    with tqdm(total=len(where), disable=not progress, desc="detecting", unit="view") as bar:
        for name, data in capture.source.read_many(list(where)):
            try:
                image = decode_image(data, None)
            except Exception as err:  # Pillow raises many types for a damaged file
                raise LightnetsError(f"cannot decode image {name!r} in {capture.source.path}: {err}") from None
            found, conf = detector(image)
            if points is None:
                points = np.full((frames, len(found), views, 2), np.nan)
                confidence = np.zeros((frames, len(found), views))
            f, v = where[name]
            points[f, :, v], confidence[f, :, v] = found, conf
            sizes[f, v] = image.shape[1], image.shape[0]
            bar.update()
    return points, confidence, sizes


def labels_of(capture: Capture, step: Bootstrap, sizes: np.ndarray, joint_names: list[str],
              limbs: Sequence[Sequence[int]]) -> dict[str, Any]:
    """The selected frames' reprojected points in every view, as a keypoints.json's content: a joint is labelled
    where it was triangulated (the reader leaves out those reprojected outside the image, and counts them)."""
    images = []
    for rank, f in enumerate(step.frames):
        for v, file in enumerate(capture.files[f]):
            if file is None:
                continue
            xy = step.labels[rank, :, v]
            labelled = np.isfinite(xy).all(axis=-1)
            rows = [[round(float(x), 3), round(float(y), 3), 1] if ok else [0.0, 0.0, 0]
                    for (x, y), ok in zip(xy, labelled, strict=True)]
            images.append({"file": file, "width": int(sizes[f, v, 0]), "height": int(sizes[f, v, 1]),
                           "keypoints": rows, "frame": capture.frames[f], "view": capture.views[v]})
    return {"joint_names": list(joint_names), "skeleton": [list(p) for p in limbs], "images": images}


@dataclass
class BootstrapRound:
    """One round: its folder, the step's result, the labels added (None when no frame passed) and the retraining."""

    dir: Path
    step: Bootstrap
    added: KeypointDataset | None
    train: RunResult


def bootstrap_rounds(detector: str | Path, capture: str | Path | Capture, data: str | Path | KeypointDataset,
                     out: str | Path, *, rounds: int = 1, min_confidence: float = 0.2, threshold: float = 20.0,
                     top_n: int = 100, val_split: tuple[str, str] | None = None,
                     val_data: str | Path | KeypointDataset | None = None, progress: bool = True,
                     **train_options: Any) -> list[BootstrapRound]:
    """``rounds`` rounds of multiview bootstrapping from the pose checkpoint ``detector`` on ``capture``, each
    retraining on ``data`` (its ``val_split`` names held out, or ``val_data``) plus the round's new labels, from the
    previous detector's weights; ``train_options`` go to :func:`train_pose` (``epochs``, ``budget_min``, ...).
    Everything is written under ``out``, which must not hold a previous bootstrapping."""
    if not isinstance(rounds, int) or rounds < 1:
        raise LightnetsError(f"rounds must be an integer >= 1, got {rounds!r}")
    if not isinstance(top_n, int) or top_n < 1:
        raise LightnetsError(f"top_n must be an integer >= 1, got {top_n!r}")
    out = Path(out)
    if any((out / f"round{r}").exists() for r in range(1, rounds + 1)):
        raise LightnetsError(f"{out} already holds bootstrapping rounds; give another folder")
    capture = capture if isinstance(capture, Capture) else read_capture(capture)
    labelled = data if isinstance(data, KeypointDataset) else read_keypoint_data(data)
    current, done = Path(detector), []
    for r in range(1, rounds + 1):
        folder = out / f"round{r}"
        folder.mkdir(parents=True)
        model = load_pose_machine(current)
        meta = model.checkpoint_meta
        points, confidence, sizes = detect_capture(capture, partial(find_keypoints, model), progress)
        step = bootstrap(points, capture.cameras, confidence, min_confidence, threshold, top_n)
        passed = step.frames[step.scores[step.frames] > 0]  # a frame without one inlier adds nothing
        step.frames, step.labels = passed, step.labels[: len(passed)]
        labels = labels_of(capture, step, sizes, meta["joint_names"], meta.get("limbs", []))
        write_text_atomically(folder / "labels.json", json.dumps(labels))
        write_text_atomically(folder / "scores.json", json.dumps(_scores(capture, step, current, min_confidence,
                                                                          threshold, top_n), indent=1))
        added = labels_on_source(capture.source, labels, str(folder / "labels.json")) if labels["images"] else None
        train = train_pose(labelled, init=current, added=[added] if added else [], val_split=val_split,
                           val_data=val_data, out=folder / "train", progress=progress, **train_options)
        done.append(BootstrapRound(folder, step, added, train))
        current = train.run_dir / "last"
    return done


def _scores(capture: Capture, step: Bootstrap, detector: Path, min_confidence: float, threshold: float,
            top_n: int) -> dict[str, Any]:
    tri = step.triangulation
    return {"detector": str(detector), "min_confidence": min_confidence, "threshold_px": threshold, "top_n": top_n,
            "score": step.score_kind, "frames": capture.frames,
            "scores": [round(float(s), 4) for s in step.scores],
            "selected": [capture.frames[f] for f in step.frames],
            "dropped_low_confidence": step.dropped_low_confidence, "skipped_views": int(tri.skipped_views),
            "skipped_consensus": int(tri.skipped_consensus)}

