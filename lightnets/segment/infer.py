"""Segmentation verbs on a trained checkpoint: load it, evaluate it on a data set, segment image files and draw
colour overlays a person can look at."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._io import drawing_paths
from ..data.folder import image_files, read_image_file
from ..errors import LightnetsError
from ..train.checkpoint import load_checkpoint, restore_model
from ..train.run import pick_device
from .augment import normalize_images
from .data import SegmentationCache, read_segmentation_data
from .model import Segmenter, create_segmenter
from .task import evaluate


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> Segmenter:
    """The segmenter of a segmentation checkpoint (a run folder, or its ``.safetensors``/``.json``), in eval mode;
    its metadata (classes, colours, mean, std, input size, recipe, metrics) is in ``model.checkpoint_meta``."""
    weights, meta = load_checkpoint(path)
    if meta.get("task") != "segmentation":
        raise LightnetsError(f"{path} is not a segmentation checkpoint; `lightnets segment` needs one from "
                             "`lightnets segment train`")
    return restore_model(create_segmenter(**meta["segmenter"]), weights, meta, path, "their segmenter", device)


def evaluate_segmenter(checkpoint: str | Path | Segmenter, data: str | Path, split: str | None = "val", *,
                       classes_file: str | None = None, palette_file: str | None = None, batch_size: int = 4,
                       device: str | None = None) -> tuple[dict[str, float], torch.Tensor]:
    """mIoU, pixel and mean accuracy and per-class IoU of a checkpoint on the ``split`` of ``data`` (whole images
    at their own size, void pixels left out), and the confusion matrix; the data's classes must be the
    checkpoint's, in its order."""
    model = checkpoint if isinstance(checkpoint, Segmenter) else load_segmenter(checkpoint, pick_device(device))
    meta = model.checkpoint_meta
    dataset = read_segmentation_data(data, split, classes_file=classes_file, palette_file=palette_file)
    if dataset.classes != meta["classes"]:
        raise LightnetsError(f"{data} has other classes than the checkpoint: {dataset.classes[:12]} against "
                             f"{meta['classes'][:12]}")
    cache = SegmentationCache(dataset).to(next(model.parameters()).device)
    return evaluate(model, cache, meta["classes"], meta["mean"], meta["std"], batch_size)


@torch.inference_mode()
def segment_image(model: Segmenter, image: np.ndarray) -> np.ndarray:
    """The class map ``(H, W)`` (uint8) of one RGB uint8 ``(H, W, 3)`` image at its own size, normalised with the
    checkpoint's mean and std. The model is put in eval mode."""
    model.eval()
    meta = model.checkpoint_meta
    device = next(model.parameters()).device
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
    return model(normalize_images(x, meta["mean"], meta["std"]))[0].argmax(0).to(torch.uint8).cpu().numpy()


def overlay(image: np.ndarray, classes: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image with each pixel's class colour blended in at ``alpha``."""
    if not 0 <= alpha <= 1:
        raise LightnetsError(f"alpha must be in [0, 1], got {alpha}")
    painted = colors[classes].astype(np.float32)
    return Image.fromarray(np.rint((1 - alpha) * image + alpha * painted).astype(np.uint8))


def predict_files(checkpoint: str | Path | Segmenter, inputs: Sequence[str | Path], *,
                  out_dir: str | Path | None = None, alpha: float = 0.5, save_masks: bool = False,
                  device: str | None = None) -> list[tuple[Path, np.ndarray]]:
    """Class maps for image files (or folders of them), each at its image's size; with ``out_dir`` each image is
    also written there as ``<name>.png`` with the class colours blended in (``alpha``) and, with ``save_masks``,
    its class-index map as ``<name>_mask.png`` (names kept apart and inputs never overwritten)."""
    files = image_files(list(inputs))
    drawings = drawing_paths(files, out_dir) if out_dir is not None else [None] * len(files)
    model = checkpoint if isinstance(checkpoint, Segmenter) else load_segmenter(checkpoint, pick_device(device))
    colors = np.asarray(model.checkpoint_meta["colors"], dtype=np.uint8)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for path, drawing in zip(files, drawings, strict=True):
        image = read_image_file(path)
        classes = segment_image(model, image)
        if drawing is not None:
            overlay(image, classes, colors, alpha).save(drawing)
            if save_masks:
                Image.fromarray(classes).save(drawing.with_name(f"{drawing.stem}_mask.png"))
        results.append((path, classes))
    return results
