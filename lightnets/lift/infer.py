"""Lifting verbs on a trained checkpoint: load it, evaluate it on Human3.6M, lift users' 2D keypoints to 3D."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_output, write_text_atomically
from .._plot import headless_pyplot
from ..errors import LightnetsError
from ..train.checkpoint import load_checkpoint, restore_model
from ..train.run import pick_device
from .data import TEST_SUBJECTS, read_h36m, read_keypoints
from .model import RepNet, create_lifter
from .skeleton import BONES, JOINTS
from .train import lift, pose_set_metrics


def load_lifter(path: str | Path, device: str | torch.device = "cpu") -> RepNet:
    """The RepNet of a lifting checkpoint (a run folder, or its ``.safetensors``/``.json``), in eval mode."""
    weights, meta = load_checkpoint(path)
    if meta.get("task") != "lifting":
        raise LightnetsError(f"{path} is not a lifting checkpoint; `lightnets lift` needs one from "
                             "`lightnets lift train`")
    return restore_model(create_lifter(meta["lifter"]), weights, meta, path, "their lifter", device)


def evaluate_lifter(checkpoint: str | Path, data: str | Path, inputs: str | None = None,
                    device: str | None = None) -> dict[str, float]:
    """Protocol 1 and 2 on the test subjects S9 and S11 (every row, all 4 cameras) with 2D ``inputs`` ("gt" or
    "sh"; default: what the checkpoint was trained on)."""
    model = load_lifter(checkpoint, pick_device(device))
    test = read_h36m(data, inputs or model.checkpoint_meta["inputs"], TEST_SUBJECTS)
    metrics = pose_set_metrics(model, test)
    return metrics | {"skipped": test.skipped}


def plot_poses(pose2d: np.ndarray, pose3d: np.ndarray, path: Path, count: int = 4) -> Path | None:
    """The first ``count`` inputs (2D, image axes) beside their lifted 3D poses, so a person can look at them."""
    plt = headless_pyplot()
    if plt is None:
        return None
    count = min(count, len(pose2d))
    fig = plt.figure(figsize=(4 * count, 8))
    for i in range(count):
        flat = fig.add_subplot(2, count, i + 1)
        space = fig.add_subplot(2, count, count + i + 1, projection="3d")
        for parent, child in BONES:
            colour = "tab:red" if JOINTS[child].startswith("R") else "tab:blue"
            flat.plot(*pose2d[i, [parent, child]].T, color=colour)
            x, y, z = pose3d[i, [parent, child]].T
            space.plot(x, z, -y, color=colour)  # depth away from the viewer, image y up
        flat.invert_yaxis()
        flat.set_aspect("equal")
        flat.set_title(f"input {i}")
        space.set_title(f"3D {i} (mm)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


def predict_keypoints(checkpoint: str | Path, keypoints: str | Path, out: str | Path, *,
                      joint_order: str = "auto", device: str | None = None) -> tuple[Path, Path | None]:
    """Lift the 2D poses of a keypoint file (see ``read_keypoints``) and write them as json (``poses3d``: mm in
    the camera frame, joints in ``JOINTS`` order) at ``out``, with a png of the first few beside it."""
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise LightnetsError(f"the output must be a .json file, got {out}")
    if out.resolve() == Path(keypoints).resolve():
        raise LightnetsError(f"{out} is the input file; choose another output")
    model = load_lifter(checkpoint, pick_device(device))
    pose2d = read_keypoints(keypoints, joint_order)
    pose3d = lift(model, torch.as_tensor(pose2d)).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, json.dumps({"joints": list(JOINTS), "unit": "mm", "frame": "camera",
                                           "poses3d": np.round(pose3d, 2).tolist()}))
    return out, plot_poses(pose2d, pose3d, out.with_suffix(".png"))
