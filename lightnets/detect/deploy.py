"""Deploying a detector: ONNX export of the network and a numpy post-processing that turns its outputs into boxes.

The exported graph ends at the last stage's heads: ``heatmap`` (class probabilities, the sigmoid applied in the
graph) ``(1, C, S/s, S/s)``, ``size`` and ``offset`` ``(1, 2, S/s, S/s)`` in output-stride pixels (``s`` is the
file's ``output_stride``, ``S`` its ``input_size``). Decoding stays outside the graph in :func:`decode_heads`,
which needs only numpy, so an application can copy it (and ``letterbox_image``, numpy and Pillow) and run the
file on ONNX Runtime alone::

    session = onnxruntime.InferenceSession("best.onnx")
    meta = session.get_modelmeta().custom_metadata_map       # class_names, input_size, mean, std, output_stride
    page, transform = letterbox_image(image, int(meta["input_size"]))   # centered, mean-colour padding
    x = ((page / 255 - json.loads(meta["mean"])) / json.loads(meta["std"])).transpose(2, 0, 1)[None]
    heatmap, size, offset = session.run(None, {"input": x.astype("float32")})
    boxes, scores, labels = decode_heads(heatmap, size, offset, stride=int(meta["output_stride"]),
                                         transform=transform, image_size=(width, height))

:class:`OnnxDetector` does exactly that for lightnets users. Keeping top-K out of the graph also keeps the
export check exact: the heads are compared with PyTorch's value by value, where a top-K inside the graph would
reorder near-equal scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import atomic_output
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..deploy.classifier import DeployInfo
from ..deploy.onnx import (
    DEFAULT_ATOL,
    export_graph,
    export_target,
    fold_batchnorm,
    read_metadata,
    run_outputs,
    tolerance,
    write_metadata,
)
from ..deploy.runtimes import onnx_session
from ..errors import LightnetsError
from .decode import Detections
from .infer import load_detector
from .model import CenterNet
from .tiles import TileConfig, detect_tiled
from .transforms import letterbox_image

HEAD_OUTPUTS = ("heatmap", "size", "offset")


class DetectorHeads(nn.Module):
    """The graph that is exported: the detector's last stage, heatmap as probabilities."""

    def __init__(self, detector: CenterNet) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        last = self.detector(x)[-1]
        return last["heatmap"].sigmoid(), last["size"], last["offset"]


@dataclass(frozen=True)
class DetectorExport:
    """The written file, and the worst difference of each output from PyTorch's on the check inputs."""

    path: Path
    opset: int
    input_size: int
    folded_bn: int
    max_abs_diff: dict[str, float]


def export_detector(checkpoint: str | Path | CenterNet, path: str | Path | None = None, *,
                    input_size: int | None = None, opset: int = 18, check_inputs: torch.Tensor | None = None,
                    atol: float = DEFAULT_ATOL["fp32"]) -> DetectorExport:
    """Fold batch norm, export a detector's heads to ONNX at ``input_size`` (default: the checkpoint's), check
    every output against PyTorch on ONNX Runtime, and write the metadata :class:`OnnxDetector` needs.

    ``checkpoint`` is a detection run folder or checkpoint file, or a :class:`CenterNet` (its ``checkpoint_meta``,
    when it has one, gives class names, input size and top-K). ``path`` defaults to the checkpoint's file with
    the suffix ``.onnx``. ``check_inputs`` (normalised images) default to 4 seeded random ones; each output may
    differ by ``atol`` times its largest magnitude where that exceeds 1. Raises ``LightnetsError`` and writes
    nothing when the check fails.
    """
    model, path = export_target(checkpoint, path, CenterNet, load_detector)
    meta = getattr(model, "checkpoint_meta", {})
    size = input_size or meta.get("input_size", 512)
    if size < 32:
        raise LightnetsError(f"input_size must be at least 32, got {size!r}")
    classes = list(meta.get("classes", [str(i) for i in range(model.num_classes)]))
    info = DeployInfo(f"centernet_{model.config.get('backbone', 'detector')}", size, classes,
                      tuple(meta.get("mean", IMAGENET_MEAN)), tuple(meta.get("std", IMAGENET_STD)), model.config)
    extra = {"task": "detection", "output_stride": str(model.output_stride), "top_k": str(meta.get("top_k", 100)),
             "outputs": json.dumps(HEAD_OUTPUTS), "letterbox": "centered, mean-colour padding", "precision": "fp32"}
    if check_inputs is None:
        check_inputs = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    folded, n_folded = fold_batchnorm(model)
    with torch.no_grad():
        reference = [t.numpy() for t in DetectorHeads(model)(check_inputs)]
    with atomic_output(path) as tmp:
        export_graph(DetectorHeads(folded), check_inputs[:1], tmp, opset, output_names=HEAD_OUTPUTS)
        write_metadata(tmp, info.metadata() | extra)
        got = run_outputs(tmp, check_inputs.numpy())
        diffs = {name: float(np.abs(g - r).max()) for name, g, r in zip(HEAD_OUTPUTS, got, reference, strict=True)}
        for name, ref in zip(HEAD_OUTPUTS, reference, strict=True):
            limit = tolerance(atol, ref)
            if not diffs[name] <= limit:
                raise LightnetsError(f"export failed the numeric check: max |{name} difference| {diffs[name]:.3g} > "
                                     f"{limit:g}; nothing was written to {str(path)!r}")
    return DetectorExport(path, opset, size, n_folded, diffs)


def decode_heads(heatmap: np.ndarray, size: np.ndarray, offset: np.ndarray, *, stride: int, top_k: int = 100,
                 score_threshold: float = 0.05, transform: Sequence[float] | None = None,
                 image_size: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``boxes`` ``(K, 4)`` (``x1, y1, x2, y2``), ``scores`` and ``labels`` from the exported heads
    (batch 1), by descending score, with numpy only: the steps of :func:`lightnets.detect.decode`.

    A pixel is a peak when it equals the maximum of its 3x3 neighbourhood; the ``top_k`` best peaks over all
    classes are kept, then those scoring at least ``score_threshold``. Boxes are in network-input pixels unless
    ``transform`` (the letterbox's ``sx, sy, px, py``) maps them back to the image, clipped to ``image_size``
    (width, height) when given.
    """
    if top_k < 1:
        raise LightnetsError(f"top_k must be >= 1, got {top_k!r}")
    if heatmap.ndim != 4 or len(heatmap) != 1:
        raise LightnetsError(f"decode_heads takes one image's heads (batch 1), got a heatmap of shape {heatmap.shape}")
    heat = heatmap[0]
    classes, height, width = heat.shape
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    pooled = np.max([padded[:, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)], axis=0)
    peaks = np.where(pooled == heat, heat, 0).ravel()
    k = min(top_k, peaks.size)
    index = np.argpartition(-peaks, k - 1)[:k]
    index = index[np.argsort(-peaks[index], kind="stable")]
    index = index[peaks[index] >= score_threshold]
    labels, pixel = np.divmod(index, height * width)
    ys, xs = np.divmod(pixel, width)
    dx, dy = offset.reshape(2, -1)[:, pixel]
    half_w, half_h = np.maximum(size.reshape(2, -1)[:, pixel], 0) * stride / 2  # a box cannot be negative
    cx, cy = (xs + dx) * stride, (ys + dy) * stride
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)
    if transform is not None:
        sx, sy, px, py = transform
        boxes = (boxes - np.float32([px, py, px, py])) / np.float32([sx, sy, sx, sy])
        if image_size is not None:
            boxes = np.minimum(boxes.clip(min=0), np.float32([*image_size, *image_size]))
    return boxes, peaks[index], labels


class OnnxDetector:
    """An exported detector on ONNX Runtime, pre-processed from the file's own metadata (letterbox, mean, std)
    and decoded by :func:`decode_heads`: the deployment path, usable where PyTorch's ``detect_images`` is.

    >>> detector = OnnxDetector("runs/train/detect-mobilenetv3_large_100/best.onnx")
    >>> found = detector(page)   # Detections in the page's pixels
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no .onnx file at {str(path)!r} (export one with `lightnets detect export`)")
        meta = read_metadata(path)
        if meta.get("task") != "detection":
            raise LightnetsError(f"{path} is not an exported detector; `lightnets detect export` writes one")
        self.info = DeployInfo.from_metadata(meta)
        self.stride, self.top_k = int(meta["output_stride"]), int(meta["top_k"])
        self.session = onnx_session(path, threads)

    def __call__(self, image: np.ndarray, *, top_k: int | None = None, score_threshold: float = 0.05,
                 tiles: TileConfig | None = None) -> Detections:
        """Detections for one RGB uint8 ``(H, W, 3)`` image, in its own pixels: letterboxed whole, or with
        ``tiles`` (their size the file's input size) tile by tile, as ``detect_tiled``."""
        top_k = top_k or self.top_k
        if tiles is not None:
            if tiles.size != self.info.input_size:
                raise LightnetsError(f"tiles of {tiles.size} px do not fit this file's {self.info.input_size} px "
                                     "input")
            return detect_tiled(lambda batch: [self._detect(tile, None, top_k, score_threshold) for tile in batch],
                                image, tiles)
        boxed, transform = letterbox_image(image, self.info.input_size)
        return self._detect(boxed, transform, top_k, score_threshold, (image.shape[1], image.shape[0]))

    def _detect(self, boxed: np.ndarray, transform: tuple[float, float, float, float] | None, top_k: int,
                score_threshold: float, image_size: tuple[int, int] | None = None) -> Detections:
        """Detections of one network-size uint8 image, mapped through ``transform`` (the letterbox) and clipped to
        ``image_size``; in its own px without them (a tile's, as ``decode`` gives)."""
        x = (boxed.astype(np.float32) / 255 - np.float32(self.info.mean)) / np.float32(self.info.std)
        heads = self.session.run(None, {"input": np.ascontiguousarray(x.transpose(2, 0, 1)[None])})
        boxes, scores, labels = decode_heads(*heads, stride=self.stride, top_k=top_k, score_threshold=score_threshold,
                                             transform=transform, image_size=image_size)
        return Detections(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels))

