"""Users' own Human3.6M copies in the 3d-pose-baseline folder layout, converted once into the npz ``read_h36m``
reads (the layout of Martinez et al.'s release, which most lifting code starts from):

    cameras.h5                                     subject{S}/camera{1..4}/{R, T, f, c, k, p}
    S{S}/MyPoses/3D_positions/<Action>[ <n>].h5    3D_positions: (96, N) world mm, 32 joints, 50 Hz
    S{S}/StackedHourglass/<Action>[_<n>].<camera id>.h5    poses: (N, 16, 2) px, MPII joint order

Needs h5py (``pip install "lightnets[lift]"``). A sequence without its 3D file is left out; a missing detection
file leaves that camera's rows invalid (``sh_valid`` False), as Human3.6M's damaged S11 Directions video does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_output
from ..errors import LightnetsError

ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases", "Sitting",
           "SittingDown", "Smoking", "Waiting", "WalkDog", "WalkTogether", "Walking")
ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}  # names some subjects' files use
CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")  # camera1..4 of cameras.h5
SUBJECTS = (1, 5, 6, 7, 8, 9, 11)
JOINTS17_OF_32 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)


def _h5py():  # noqa: ANN202 - the h5py module
    try:
        import h5py
    except ImportError:
        raise LightnetsError("reading the 3d-pose-baseline .h5 layout needs h5py: pip install "
                             "\"lightnets[lift]\"") from None
    return h5py


def _action_index(stem: str) -> int:
    name = stem.split(" ")[0].split("_")[0]
    name = ALIASES.get(name, name)
    if name not in ACTIONS:
        raise LightnetsError(f"unknown Human3.6M action {stem!r}; expected one of {', '.join(ACTIONS)}")
    return ACTIONS.index(name)


def _detections(folder: Path, stem: str, camera: str) -> Path | None:
    """The Stacked-Hourglass file of a sequence and camera, under either name releases use for its action."""
    name = stem.replace(" ", "_")
    swaps = [(alias, canonical) for alias, canonical in ALIASES.items()]
    for candidate in (name, *(name.replace(a, b) for a, b in swaps + [(b, a) for a, b in swaps] if a in name)):
        path = folder / f"{candidate}.{camera}.h5"
        if path.is_file():
            return path
    return None


def convert_h36m(root: str | Path, out: str | Path, frame_step: int = 5) -> dict[str, int]:
    """Write the npz of ``read_h36m`` from a 3d-pose-baseline folder, keeping every ``frame_step``-th frame (5: the
    50 Hz data at 10 Hz). Returns counts: sequences, frames, invalid (frame, camera) detections."""
    h5py = _h5py()
    root, out = Path(root), Path(out)
    if frame_step < 1:
        raise LightnetsError(f"frame step must be >= 1, got {frame_step}")
    if not (root / "cameras.h5").is_file():
        raise LightnetsError(f"{root} has no cameras.h5: not a 3d-pose-baseline Human3.6M folder")
    cams: dict[str, list] = {a: [] for a in "RTfckp"}
    poses3d, poses2d, valid, subject, action, sequences = [], [], [], [], [], 0
    with h5py.File(root / "cameras.h5", "r") as h:
        for s in SUBJECTS:
            for a in "RTfckp":
                try:
                    values = [np.asarray(h[f"subject{s}/camera{c}/{a}"], np.float64) for c in range(1, 5)]
                except KeyError:
                    raise LightnetsError(f"{root / 'cameras.h5'} lacks subject{s}'s camera {a}") from None
                cams[a].append([v.T if a == "R" else v.reshape(-1) for v in values])
    for s in SUBJECTS:
        files = sorted((root / f"S{s}" / "MyPoses" / "3D_positions").glob("*.h5"))
        for path in files:
            with h5py.File(path, "r") as h:
                if "3D_positions" not in h:
                    raise LightnetsError(f"{path} has no 3D_positions")
                world = np.asarray(h["3D_positions"], np.float64).T.reshape(-1, 32, 3)[::frame_step]
            detections = np.full((len(world), 4, 16, 2), np.nan)
            for ci, camera in enumerate(CAMERA_IDS):
                sh = _detections(root / f"S{s}" / "StackedHourglass", path.stem, camera)
                if sh is not None:
                    with h5py.File(sh, "r") as h:
                        found = np.asarray(h["poses"], np.float64)[::frame_step]
                    if found.shape[1:] != (16, 2):
                        raise LightnetsError(f"{sh}: poses must be (N, 16, 2), got {found.shape}")
                    n = min(len(found), len(world))
                    detections[:n, ci] = found[:n]
            poses3d.append(world[:, JOINTS17_OF_32])
            poses2d.append(detections)
            valid.append(np.isfinite(detections).all(axis=(2, 3)))
            subject.append(np.full(len(world), s, np.int8))
            action.append(np.full(len(world), _action_index(path.stem), np.int8))
            sequences += 1
    if not sequences:
        raise LightnetsError(f"{root} has no S*/MyPoses/3D_positions/*.h5 files")
    arrays = {"pose3d_world": np.concatenate(poses3d).astype(np.float32),
              "pose2d_sh": np.concatenate(poses2d).astype(np.float32), "sh_valid": np.concatenate(valid),
              "subject": np.concatenate(subject), "action": np.concatenate(action), "action_names": np.array(ACTIONS),
              "cam_subjects": np.array(SUBJECTS, np.int8), "cam_id": np.array([CAMERA_IDS] * len(SUBJECTS))}
    arrays |= {f"cam_{a}": np.asarray(v) for a, v in cams.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return {"sequences": sequences, "frames": len(arrays["subject"]), "invalid": int((~arrays["sh_valid"]).sum())}
