"""Poses to lift: Human3.6M in the 3d-pose-baseline layout (one npz, see ``read_h36m``), and users' 2D keypoints.

A ``PoseSet`` holds one row per (frame, camera): the 2D pose in pixels, the 3D pose in that camera's frame (mm),
the subject, the action and the camera. Lifting sees one camera at a time, so the 4 views of a frame are 4 rows.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import LightnetsError
from .cameras import Camera
from .skeleton import FROM_H36M17, FROM_MPII, JOINTS, ROOT, named_joint_order

TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
TEST_SUBJECTS = (9, 11)
INPUTS = ("gt", "sh")  # ground-truth 2D (the 3D projected through the real cameras), Stacked-Hourglass detections
H36M_KEYS = ("pose3d_world", "pose2d_sh", "sh_valid", "subject", "action", "action_names", "cam_subjects",
             "cam_R", "cam_T", "cam_f", "cam_c", "cam_k", "cam_p")
JOINT_ORDERS = {"lightnets": tuple(range(len(JOINTS))), "h36m17": FROM_H36M17, "mpii": FROM_MPII}


@dataclass
class PoseSet:
    """2D poses (N, 16, 2) px, their 3D poses in the camera frame (N, 16, 3) mm, and per row the subject, action
    index and camera index; ``skipped`` counts the rows left out (invalid detections)."""

    pose2d: np.ndarray
    pose3d: np.ndarray
    subject: np.ndarray
    action: np.ndarray
    camera: np.ndarray
    action_names: tuple[str, ...]
    skipped: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pose2d)

    def subset(self, rows: np.ndarray) -> PoseSet:
        return PoseSet(self.pose2d[rows], self.pose3d[rows], self.subject[rows], self.action[rows],
                       self.camera[rows], self.action_names, self.skipped, self.source, self.notes)


def load_h36m_arrays(path: Path) -> dict[str, np.ndarray]:
    """The checked arrays of a Human3.6M npz in the 3d-pose-baseline layout, views kept apart (multiview work needs
    them so; ``read_h36m`` flattens them into pose rows)."""
    if not path.is_file():
        raise LightnetsError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in H36M_KEYS if k not in z.files]
            if "positions_3d" in z.files or "positions_2d" in z.files:
                raise LightnetsError(f"{path} is in VideoPose3D's layout, pickled dictionaries, which lightnets never "
                                     "unpickles; convert the 3d-pose-baseline folder instead (`lightnets lift "
                                     "convert`)")
            if missing:
                raise LightnetsError(f"{path} is not a Human3.6M npz in the 3d-pose-baseline layout: it lacks "
                                     f"{', '.join(missing)}")
            return {k: z[k] for k in H36M_KEYS}
    except (OSError, ValueError) as err:
        if isinstance(err, LightnetsError):
            raise
        raise LightnetsError(f"cannot read {path} as an npz: {err}") from None


def read_h36m(path: str | Path, inputs: str = "gt", subjects: tuple[int, ...] = TRAIN_SUBJECTS) -> PoseSet:
    """The rows of ``subjects`` from the Human3.6M npz (``pose3d_world``, ``pose2d_sh``, cameras; the layout of
    ``h36m.md``), with 2D ``inputs`` "gt" (the 3D projected through the calibrated camera, lens distortion
    included) or "sh" (the Stacked-Hourglass detections). Rows whose detection is invalid are skipped and counted.
    """
    if inputs not in INPUTS:
        raise LightnetsError(f"unknown 2D inputs {inputs!r}; choose from {', '.join(INPUTS)}")
    path = Path(path)
    z = load_h36m_arrays(path)
    world = z["pose3d_world"]
    if world.ndim != 3 or world.shape[1:] != (17, 3) or z["pose2d_sh"].shape[1:] != (4, 16, 2):
        raise LightnetsError(f"{path}: expected pose3d_world (N, 17, 3) and pose2d_sh (N, 4, 16, 2), got "
                             f"{world.shape} and {z['pose2d_sh'].shape}")
    known = [int(s) for s in z["cam_subjects"]]
    rows2d, rows3d, subj, act, cams, skipped = [], [], [], [], [], 0
    for s in subjects:
        if s not in known:
            raise LightnetsError(f"{path} has no cameras for subject S{s}; it has S{', S'.join(map(str, known))}")
        frames = np.flatnonzero(z["subject"] == s)
        si = known.index(s)
        joints = world[frames][:, FROM_H36M17].astype(np.float64)
        for ci in range(z["cam_R"].shape[1]):
            cam = Camera(*(z[f"cam_{a}"][si, ci] for a in "RTfckp"))
            pose3d = cam.to_camera(joints)
            if inputs == "gt":
                pose2d = cam.project(joints)
                valid = np.isfinite(pose2d).all(axis=(1, 2))
            else:
                pose2d = z["pose2d_sh"][frames, ci][:, FROM_MPII].astype(np.float64)
                valid = z["sh_valid"][frames, ci] & np.isfinite(pose2d).all(axis=(1, 2))
            valid &= np.isfinite(pose3d).all(axis=(1, 2))
            skipped += int((~valid).sum())
            rows2d.append(pose2d[valid])
            rows3d.append(pose3d[valid])
            subj.append(np.full(int(valid.sum()), s, np.int16))
            act.append(z["action"][frames][valid].astype(np.int16))
            cams.append(np.full(int(valid.sum()), ci, np.int16))
    names = tuple(str(n) for n in z["action_names"])
    return PoseSet(np.concatenate(rows2d).astype(np.float32), np.concatenate(rows3d).astype(np.float32),
                   np.concatenate(subj), np.concatenate(act), np.concatenate(cams), names, skipped, str(path))


def normalize_2d(pose2d: torch.Tensor) -> torch.Tensor:
    """RepNet's input normalisation: each pose (..., 16, 2) centred on its mean joint and divided by the standard
    deviation of all its coordinates, so that position and image scale carry no information."""
    centred = pose2d - pose2d.mean(dim=-2, keepdim=True)
    scale = centred.flatten(-2).std(dim=-1)[..., None, None]
    return centred / scale.clamp_min(1e-6)


def root_centred(pose3d: torch.Tensor) -> torch.Tensor:
    return pose3d - pose3d[..., ROOT:ROOT + 1, :]


def _numbers(value: object, source: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise LightnetsError(f"{source}: keypoints must be numbers") from None


def _keypoint_array(value: object, source: str) -> np.ndarray:
    array = _numbers(value, source)
    if array.ndim == 2 and array.shape[1] == 2 * len(JOINTS):
        array = array.reshape(-1, len(JOINTS), 2)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (len(JOINTS), 2):
        raise LightnetsError(f"{source}: expected 2D poses of {len(JOINTS)} joints (N, {len(JOINTS)}, 2) or "
                             f"(N, {2 * len(JOINTS)}), got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=(1, 2)))
    if bad.size:
        raise LightnetsError(f"{source}: pose {int(bad[0])} has NaN or infinite coordinates "
                             f"({bad.size} such pose(s))")
    return array


def read_keypoints(path: str | Path, joint_order: str = "auto") -> np.ndarray:
    """2D poses (N, 16, 2) in pixels from a .json (a list of poses, each a list of [x, y], or {"keypoints": ...}),
    a .csv (one pose per row: x0, y0, x1, y1, ...; a header row is skipped) or an .npz (key ``keypoints``), with
    joints in ``joint_order``: "lightnets" (``JOINTS``), "h36m17" (Human3.6M's 17, Spine dropped), "mpii", or
    "auto": by the file's own ``joint_names`` (what ``lightnets pose predict --keypoints`` writes, LSP's 14 joints
    among them) where it has them, else ``JOINTS``."""
    path = Path(path)
    if joint_order not in (*JOINT_ORDERS, "auto"):
        raise LightnetsError(f"unknown joint order {joint_order!r}; choose from auto, {', '.join(JOINT_ORDERS)}")
    if not path.is_file():
        raise LightnetsError(f"no such file: {path}")
    suffix = path.suffix.lower()
    names = None
    try:
        if suffix == ".json":
            value = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(value, dict):
                names, value = value.get("joint_names"), value.get("keypoints")
        elif suffix == ".csv":
            rows = [r for r in csv.reader(path.read_text(encoding="utf-8").splitlines()) if r]
            if rows and not _is_number(rows[0][0]):
                rows = rows[1:]
            value = rows
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "keypoints" not in z.files:
                    raise LightnetsError(f"{path} has no 'keypoints' array (it has {', '.join(z.files)})")
                value = z["keypoints"]
                names = z["joint_names"].tolist() if "joint_names" in z.files else None
        else:
            raise LightnetsError(f"{path}: keypoints must be a .json, .csv or .npz file")
    except (UnicodeDecodeError, json.JSONDecodeError, OSError, ValueError) as err:
        if isinstance(err, LightnetsError):
            raise
        raise LightnetsError(f"cannot read keypoints from {path}: {err}") from None
    if value is None:
        raise LightnetsError(f"{path} has no 'keypoints'")
    if joint_order == "auto" and names is not None:
        return _keypoint_array(_by_name(value, list(names), str(path)), str(path))
    if joint_order == "h36m17":
        array = _numbers(value, str(path))
        if array.shape[-2:] != (17, 2):
            raise LightnetsError(f"{path}: h36m17 keypoints must have 17 joints, got shape {array.shape}")
        value = array[..., list(FROM_H36M17), :]
    array = _keypoint_array(value, str(path))
    return array[:, list(JOINT_ORDERS[joint_order]) if joint_order == "mpii" else slice(None)]


def _by_name(value: object, names: list[str], source: str) -> np.ndarray:
    """Poses whose joints the file names, in our order (a joint the file lacks as the midpoint of two it has)."""
    order = named_joint_order(names, source)
    array = _numbers(value, source)
    array = array[None] if array.ndim == 2 else array
    if array.ndim != 3 or array.shape[1:] != (len(names), 2):
        raise LightnetsError(f"{source}: expected poses of its {len(names)} named joints, (N, {len(names)}, 2), "
                             f"got shape {array.shape}")
    return np.stack([array[:, list(indices)].mean(axis=1) for indices in order], axis=1)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
