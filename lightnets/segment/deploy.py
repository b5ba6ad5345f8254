"""Deploying a segmenter: ONNX export of the network up to its logits, and a numpy predictor around the file.

The exported graph takes the normalised float32 batch ``input`` ``(B, 3, H, W)`` and returns ``logits``
``(B, C, H, W)`` at the input's size, with batch, height and width all free, so one file segments images of any
size, as ``segment_image`` does. The argmax stays outside the graph: the export check then compares logits value by
value, where class maps would differ at every near-tie. An application needs only numpy and ONNX Runtime::

    session = onnxruntime.InferenceSession("best.onnx")
    meta = session.get_modelmeta().custom_metadata_map       # class_names, colors, mean, std, input_size
    x = ((image / 255 - json.loads(meta["mean"])) / json.loads(meta["std"])).transpose(2, 0, 1)[None]
    classes = session.run(None, {"input": x.astype("float32")})[0][0].argmax(0)   # (H, W) class indices

:class:`OnnxSegmenter` does exactly that for lightnets users.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._io import atomic_output, write_failure
from .._version import __version__
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
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
from ..deploy.runtimes import load_onnx, runtime_runner
from ..errors import LightnetsError
from .data import SegmentationCache, read_segmentation_data
from .infer import load_segmenter
from .labels import display_colors
from .metrics import confusion_matrix, segmentation_metrics
from .model import Segmenter

DEFAULT_INPUT_SIZE = (512, 512)  # (H, W) for a segmenter whose checkpoint_meta names none
MIN_INPUT_SIZE = 32


@dataclass(frozen=True)
class SegmenterExport:
    """The written file, the size it was checked at, and the worst logit difference from PyTorch's there (and, when
    the graph's height and width are free, at a second, odd size)."""

    path: Path
    opset: int
    input_size: tuple[int, int]
    folded_bn: int
    max_abs_diff: float
    dynamic_size: bool


def fixed_input_size(path: str | Path) -> tuple[int, int] | None:
    """The (H, W) an ONNX file's input is fixed to, or None when its height and width are free."""
    dims = load_onnx(path).graph.input[0].type.tensor_type.shape.dim[2:]
    if len(dims) == 2 and all(d.HasField("dim_value") for d in dims):
        return dims[0].dim_value, dims[1].dim_value
    return None


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, int) and s >= MIN_INPUT_SIZE for s in size):
        raise LightnetsError(f"input_size must be (height, width), each an integer >= {MIN_INPUT_SIZE}, got {size!r}")
    return int(size[0]), int(size[1])


def export_segmenter(checkpoint: str | Path | Segmenter, path: str | Path | None = None, *,
                     input_size: tuple[int, int] | None = None, opset: int = 18,
                     check_inputs: torch.Tensor | None = None, atol: float = DEFAULT_ATOL["fp32"]) -> SegmenterExport:
    """Fold batch norm, export a segmenter to ONNX (batch, height and width free), check its logits against
    PyTorch's on ONNX Runtime, and write the metadata :class:`OnnxSegmenter` needs (classes, colours, mean, std,
    input size).

    ``checkpoint`` is a segmentation run folder or checkpoint file, or a :class:`Segmenter` (its
    ``checkpoint_meta``, when it has one, gives classes, colours, normalisation and input size). ``path`` defaults
    to the checkpoint's file with the suffix ``.onnx``. ``input_size`` (H, W) defaults to the checkpoint's (else
    512x512); ``check_inputs`` (normalised images at that size) default to 2 seeded random ones, and a free-size
    graph is also checked on one image of an odd size near half that. Logits may differ by ``atol`` times their
    largest magnitude where that exceeds 1. Raises ``LightnetsError`` and writes nothing when a check fails.
    """
    model, path = export_target(checkpoint, path, Segmenter, load_segmenter)
    meta = getattr(model, "checkpoint_meta", {})
    size = _check_size(tuple(input_size or meta.get("input_hw") or DEFAULT_INPUT_SIZE))
    generator = torch.Generator().manual_seed(0)
    if check_inputs is None:
        check_inputs = torch.randn(2, 3, *size, generator=generator)
    elif tuple(check_inputs.shape[-2:]) != size:
        raise LightnetsError(f"check_inputs are {tuple(check_inputs.shape[-2:])} images but the input size is {size}")
    stride = model.output_stride  # the odd size stays within what the network takes
    other = torch.randn(1, 3, max(size[0] // 2, stride) + 1, max(size[1] // 2, stride) + 3, generator=generator)
    classes = list(meta.get("classes", [str(i) for i in range(model.num_classes)]))
    colors = meta.get("colors") or display_colors(classes).tolist()
    config = model.config
    metadata = {"lightnets.version": __version__, "task": "segmentation",
                "model_name": f"{config.get('head', 'segmenter')}_{config.get('backbone', '')}".rstrip("_"),
                "model_args": json.dumps(config), "class_names": json.dumps(classes), "colors": json.dumps(colors),
                "mean": json.dumps(list(meta.get("mean", IMAGENET_MEAN))),
                "std": json.dumps(list(meta.get("std", IMAGENET_STD))), "input_size": json.dumps(list(size)),
                "outputs": json.dumps(["logits"]), "precision": "fp32"}
    folded, n_folded = fold_batchnorm(model)
    try:
        with atomic_output(path) as tmp:
            export_graph(folded, check_inputs[:1], tmp, opset, dynamic_batch=True, dynamic_size=True)
            write_metadata(tmp, metadata)
            dynamic = fixed_input_size(tmp) is None
            diffs = [_check(model, tmp, x, atol, path) for x in ((check_inputs, other) if dynamic else (check_inputs,))]
    except OSError as err:  # a full disk, a read-only folder: Python's error names only the temporary file
        raise write_failure(path, err) from None
    return SegmenterExport(path, opset, size, n_folded, max(diffs), dynamic)


def _check(model: Segmenter, onnx_path: Path, x: torch.Tensor, atol: float, target: Path) -> float:
    """The worst logit difference between ONNX Runtime and PyTorch on ``x``; raises beyond the tolerance."""
    with torch.no_grad():
        reference = model(x).numpy()
    got = run_outputs(onnx_path, x.numpy(), dynamic_batch=True)[0]
    diff = float(np.abs(got - reference).max()) if got.shape == reference.shape else float("inf")
    limit = tolerance(atol, reference)
    if not diff <= limit:
        raise LightnetsError(f"export failed the numeric check: max |logit difference| {diff:.3g} > {limit:g} at "
                             f"{x.shape[-2]}x{x.shape[-1]}; nothing was written to {str(target)!r}")
    return diff


class OnnxSegmenter:
    """An exported segmenter on ONNX Runtime: normalised with the file's own mean and std (numpy only), class map by
    argmax, so it stands in for ``segment_image`` where PyTorch is not installed.

    A file whose height and width are free (what :func:`export_segmenter` writes) segments every image at its own
    size. One fixed to a size (another exporter's) gets each image resized to that size (bilinear) and its class map
    resized back to the image's size (nearest), so the classes near boundaries are those of the coarser map.

    >>> segmenter = OnnxSegmenter("runs/segment/lraspp-mobilenetv3_large_100/best.onnx")
    >>> classes = segmenter(image)   # (H, W) uint8 class indices; segmenter.colors[classes] paints them

    ``runtime`` is any of ``lightnets.deploy.runtimes.RUNTIMES``: ONNX Runtime, or OpenVINO in fp32 or bf16.
    """

    def __init__(self, path: str | Path, threads: int | None = None, runtime: str = "onnxruntime") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no .onnx file at {str(path)!r} (export one with export_segmenter)")
        meta = read_metadata(path)
        if meta.get("task") != "segmentation":
            raise LightnetsError(f"{path} is not an exported segmenter; export_segmenter writes one")
        try:
            self.classes: list[str] = json.loads(meta["class_names"])
            self.colors = np.asarray(json.loads(meta["colors"]), dtype=np.uint8)
            self.mean = np.asarray(json.loads(meta["mean"]), dtype=np.float32)
            self.std = np.asarray(json.loads(meta["std"]), dtype=np.float32)
            self.input_size: tuple[int, int] = tuple(json.loads(meta["input_size"]))
        except (KeyError, TypeError, ValueError) as err:  # json's JSONDecodeError is a ValueError
            raise LightnetsError(f"{path}'s segmentation metadata is damaged ({type(err).__name__}: {err}); export "
                                 "it again") from None
        self.fixed_size = fixed_input_size(path)
        self.runtime = runtime
        self.logits = runtime_runner(path, runtime, threads)  # normalised (1, 3, H, W) -> logits, numpy

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The class map ``(H, W)`` (uint8) of one RGB uint8 ``(H, W, 3)`` image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise LightnetsError(f"OnnxSegmenter takes one RGB uint8 (H, W, 3) image, got {image.dtype} "
                                 f"{image.shape}")
        height, width = image.shape[:2]
        resize = self.fixed_size is not None and self.fixed_size != (height, width)
        if resize:
            image = np.asarray(Image.fromarray(image).resize(self.fixed_size[::-1], Image.Resampling.BILINEAR))
        x = (image.astype(np.float32) / 255 - self.mean) / self.std
        logits = self.logits(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
        classes = logits[0].argmax(0).astype(np.uint8)
        if resize:
            classes = np.asarray(Image.fromarray(classes).resize((width, height), Image.Resampling.NEAREST))
        return classes


def evaluate_exported(path: str | Path, data: str | Path, split: str | None = "val", *, runtime: str = "onnxruntime",
                      threads: int | None = None, classes_file: str | None = None,
                      palette_file: str | None = None) -> tuple[dict[str, float], torch.Tensor]:
    """The metrics and confusion matrix of ``evaluate_segmenter``, for an exported file run by ``runtime``, on the
    same decoded images: what a runtime or its bf16 arithmetic costs in accuracy is then measured, not assumed."""
    segmenter = OnnxSegmenter(path, threads, runtime)
    dataset = read_segmentation_data(data, split, classes_file=classes_file, palette_file=palette_file)
    if dataset.classes != segmenter.classes:
        raise LightnetsError(f"{data} has other classes than {path}: {dataset.classes[:12]} against "
                             f"{segmenter.classes[:12]}")
    confusion = torch.zeros(len(dataset.classes), len(dataset.classes), dtype=torch.long)
    for images, masks in SegmentationCache(dataset).batches(1):
        predicted = torch.from_numpy(segmenter(images[0].permute(1, 2, 0).numpy()))
        confusion += confusion_matrix(predicted[None], masks, len(dataset.classes))
    return segmentation_metrics(confusion, dataset.classes), confusion
