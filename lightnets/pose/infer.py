"""Keypoint verbs on a trained checkpoint: load it, evaluate PCK on labelled data, find the joints in image files
and draw the skeleton on them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .._io import drawing_paths, write_text_atomically
from ..data.augment import normalize
from ..data.folder import image_files, read_image_file
from ..errors import LightnetsError
from ..train.checkpoint import load_checkpoint, restore_model
from ..train.run import pick_device
from .crops import PoseCache, square_crop
from .heatmaps import decode_heatmaps, flip_heatmaps
from .keypoints import KeypointDataset, flip_permutation, read_keypoint_data
from .metrics import PCKReport
from .model import PoseMachine, create_pose_machine
from .task import evaluate

RIGHT, LEFT, CENTRE = (230, 40, 40), (40, 90, 230), (40, 200, 60)  # joint colours by side, as the LSP drawings


def load_pose_machine(path: str | Path, device: str | torch.device = "cpu") -> PoseMachine:
    """The pose machine of a keypoint checkpoint (a run folder, or its ``.safetensors``/``.json``), in eval mode;
    its metadata (joint names, flip pairs, limbs, mean, std, input size, recipe) is in ``model.checkpoint_meta``."""
    weights, meta = load_checkpoint(path)
    if meta.get("task") != "pose":
        raise LightnetsError(f"{path} is not a keypoint checkpoint; `lightnets pose` needs one from "
                             "`lightnets pose train`")
    return restore_model(create_pose_machine(**meta["pose_machine"]), weights, meta, path, "their pose machine",
                         device)


def _model(checkpoint: str | Path | PoseMachine, device: str | None) -> PoseMachine:
    return checkpoint if isinstance(checkpoint, PoseMachine) else load_pose_machine(checkpoint, pick_device(device))


def _flip_perm(meta: dict) -> list[int]:
    return flip_permutation([tuple(p) for p in meta["flip_pairs"]], len(meta["joint_names"]))


def evaluate_pose(checkpoint: str | Path | PoseMachine, data: str | Path | KeypointDataset,
                  names: tuple[str, str] | None = None, *, flip_test: bool = True, zooms: Sequence[float] = (1.0,),
                  device: str | None = None) -> tuple[PCKReport, KeypointDataset, np.ndarray]:
    """PCK (torso-normalised, every threshold) of a checkpoint on the person crops of ``data`` (only the image
    names in ``names``, first and last, when given), the records scored and their predicted keypoints in image
    px; ``zooms`` besides 1 average in the maps of the crop magnified so (multi-scale testing). The data's joints
    must be the checkpoint's, in its order."""
    model = _model(checkpoint, device)
    meta = model.checkpoint_meta
    dataset = data if isinstance(data, KeypointDataset) else read_keypoint_data(data)
    if names is not None:
        dataset = dataset.split_by_name(*names)[1]
    if dataset.joint_names != meta["joint_names"]:
        raise LightnetsError(f"{dataset.source.path} has other joints than the checkpoint: {dataset.joint_names} "
                             f"against {meta['joint_names']}")
    cache = PoseCache(dataset, meta["input_size"]).to(next(model.parameters()).device)
    report, found = evaluate(model, cache, meta["mean"], meta["std"], _flip_perm(meta) if flip_test else None,
                             zooms=zooms)
    return report, dataset, found.numpy()


@torch.inference_mode()
def find_keypoints(model: PoseMachine, image: np.ndarray, flip_test: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints (K, 2) in image px, confidence (K,))`` of the one person in an RGB uint8 ``(H, W, 3)`` image,
    the image taken whole as the person's box (padded to a square, as the training crops are): crop the person
    first when the image holds more than one."""
    model.eval()
    meta = model.checkpoint_meta
    size = meta["input_size"]
    height, width = image.shape[:2]
    side = max(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    crop = torch.from_numpy(square_crop(Image.fromarray(image), left, top, side, size)).permute(2, 0, 1)[None]
    device = next(model.parameters()).device
    x = normalize(crop.to(device), meta["mean"], meta["std"], channels_last=False)
    maps = model(x)[-1].float()
    if flip_test:
        maps = (maps + flip_heatmaps(model(x.flip(-1))[-1].float(), _flip_perm(meta))) / 2
    points, confidence = decode_heatmaps(maps, model.output_stride)
    in_image = points[0].cpu().numpy() * (side / size) + np.array([left, top])
    return in_image, confidence[0].cpu().numpy()


def joint_colour(name: str) -> tuple[int, int, int]:
    lowered = name.lower()
    return RIGHT if "right" in lowered else LEFT if "left" in lowered else CENTRE


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, confidence: np.ndarray, joint_names: Sequence[str],
                  limbs: Sequence[Sequence[int]], threshold: float = 0.2) -> Image.Image:
    """The image with the limbs and joints drawn (red right, blue left, green the rest); joints under
    ``threshold`` confidence and their limbs are left out, so a guess is not drawn as a finding."""
    drawing = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(drawing)
    radius = max(2, round(max(image.shape[:2]) / 100))
    shown = np.asarray(confidence) >= threshold
    for a, b in limbs:
        if shown[a] and shown[b]:
            colour = joint_colour(joint_names[a]) if joint_colour(joint_names[a]) == joint_colour(joint_names[b]) \
                else CENTRE
            pen.line([tuple(keypoints[a]), tuple(keypoints[b])], fill=colour, width=max(1, radius // 2 + 1))
    for j, (x, y) in enumerate(keypoints):
        if shown[j]:
            pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=joint_colour(joint_names[j]),
                        outline=(255, 255, 255))
    return drawing


def predict_files(checkpoint: str | Path | PoseMachine, inputs: Sequence[str | Path], *,
                  out_dir: str | Path | None = None, threshold: float = 0.2, flip_test: bool = True,
                  device: str | None = None) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """``(file, keypoints, confidence)`` for image files (or folders of them), one person each; with ``out_dir``
    each image is also written there as ``<name>.png`` with its skeleton drawn (names kept apart, inputs never
    overwritten)."""
    files = image_files(list(inputs))
    drawings = drawing_paths(files, out_dir) if out_dir is not None else [None] * len(files)
    model = _model(checkpoint, device)
    meta = model.checkpoint_meta
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for path, drawing in zip(files, drawings, strict=True):
        image = read_image_file(path)
        keypoints, confidence = find_keypoints(model, image, flip_test)
        if drawing is not None:
            draw_skeleton(image, keypoints, confidence, meta["joint_names"], meta.get("limbs", []),
                          threshold).save(drawing)
        results.append((path, keypoints, confidence))
    return results


def keypoints_path(path: str | Path) -> Path:
    """``path`` as a keypoints file to write, refused unless it is a .json (so never over an input image)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise LightnetsError(f"the keypoints file must be a .json file, got {path}")
    return path


def write_keypoints(results: Sequence[tuple[Path, np.ndarray, np.ndarray]], joint_names: Sequence[str],
                    path: str | Path) -> Path:
    """The keypoints of ``predict_files`` as json: ``joint_names``, and per image its file, ``keypoints`` (x, y in
    the photo's pixels) and ``confidence``; ``lightnets lift predict`` reads it by the joint names."""
    path = keypoints_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps({
        "joint_names": list(joint_names), "images": [str(file) for file, _, _ in results],
        "keypoints": [np.round(k, 2).tolist() for _, k, _ in results],
        "confidence": [np.round(c, 4).tolist() for _, _, c in results]}))
    return path
