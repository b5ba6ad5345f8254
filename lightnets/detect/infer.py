"""Detection verbs on a trained checkpoint: load it, evaluate it on a data set, detect objects in image files."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._io import drawing_paths
from ..data.folder import image_files, read_image_file
from ..errors import LightnetsError
from ..train.checkpoint import load_checkpoint, restore_model
from ..train.run import pick_device
from .chip_data import PageCache
from .data import DetectionCache, DetectionDataset, read_detection_data
from .decode import Detections
from .draw import draw_detections
from .metrics import coco_map_available
from .model import CenterNet, create_detector
from .task import detect_images, evaluate, evaluate_pages
from .tiles import TileConfig, tile_config


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> CenterNet:
    """The CenterNet of a detection checkpoint (a run folder, or its ``.safetensors``/``.json``), in eval mode;
    its metadata (classes, input size, top_k, recipe, metrics) is in ``model.checkpoint_meta``."""
    weights, meta = load_checkpoint(path)
    if meta.get("task") != "detection":
        raise LightnetsError(f"{path} is not a detection checkpoint; `lightnets detect` needs one from "
                             "`lightnets detect train`")
    return restore_model(create_detector(**meta["detector"]), weights, meta, path, "their detector", device)


def evaluate_detector(checkpoint: str | Path, data: str | Path, *, top_k: int | None = None,
                      score_threshold: float = 0.05, f1_threshold: float = 0.3, batch_size: int = 8,
                      device: str | None = None, tiles: str | TileConfig | None = None,
                      tile_overlap: int | None = None) -> dict[str, float]:
    """Kuzushiji F1 and (when a COCO evaluator is installed) COCO mAP of a checkpoint on a data set, read in the
    checkpoint's class mode and letterboxed to its input size, or with ``tiles`` (see ``tile_config``;
    ``tile_overlap`` px) detected tile by tile at full resolution."""
    model = load_detector(checkpoint, pick_device(device))
    meta = model.checkpoint_meta
    dataset = read_detection_data(data, meta["class_agnostic"])
    unknown = sorted(set(dataset.class_names) - set(meta["classes"]))
    if unknown:
        raise LightnetsError(f"{data} has classes the checkpoint was not trained on: {', '.join(unknown[:10])}")
    # Labels follow the data set's class order; map them onto the checkpoint's.
    remap = np.array([meta["classes"].index(c) for c in dataset.class_names], dtype=np.int64)
    records = [dataclasses.replace(r, labels=remap[r.labels]) for r in dataset.records]
    dataset = DetectionDataset(dataset.source, records, meta["classes"], dataset.skipped)
    top_k = top_k or meta["top_k"]
    tiling = tile_config(tiles, meta["input_size"], meta.get("tiles"), tile_overlap)
    if tiling is None:
        cache = DetectionCache(dataset, meta["input_size"]).to(next(model.parameters()).device)
        return evaluate(model, cache, batch_size, top_k, score_threshold, f1_threshold,
                        with_map=coco_map_available())
    return evaluate_pages(model, PageCache(dataset), tiling, top_k, score_threshold, f1_threshold,
                          with_map=coco_map_available())


def predict_files(checkpoint: str | Path | CenterNet, inputs: Sequence[str | Path], *,
                  out_dir: str | Path | None = None, top_k: int | None = None, score_threshold: float = 0.3,
                  show_labels: bool = True, device: str | None = None, tiles: str | TileConfig | None = None,
                  tile_overlap: int | None = None) -> list[tuple[Path, Detections]]:
    """Detections for image files (or folders of them), in each image's pixels (letterboxed whole, or with
    ``tiles`` tile by tile, see ``tile_config``); with ``out_dir`` each image is also written there as
    ``<name>.png`` with its boxes, labels and scores drawn (names kept apart and inputs never overwritten: see
    ``drawing_paths``)."""
    files = image_files(list(inputs))
    drawings = drawing_paths(files, out_dir) if out_dir is not None else [None] * len(files)
    model = checkpoint if isinstance(checkpoint, CenterNet) else load_detector(checkpoint, pick_device(device))
    meta = model.checkpoint_meta
    results = []
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    for path, drawing in zip(files, drawings, strict=True):
        image = read_image_file(path)
        found = detect_images(model, [image], meta["input_size"], top_k or meta["top_k"], score_threshold,
                              tiles=tile_config(tiles, meta["input_size"], meta.get("tiles"), tile_overlap))[0]
        if drawing is not None:
            draw_detections(image, found, meta["classes"], show_labels).save(drawing)
        results.append((path, found))
    return results
