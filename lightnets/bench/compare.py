"""Exported files side by side: the fp32-versus-int8 comparison that ``lightnets export --int8`` prints."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ..deploy.classifier import load_images
from ..deploy.onnx import DeployInfo, export_onnx, top1_agreement
from ..deploy.runtimes import runtime_runner
from .timing import time_interleaved


def compare_onnx(paths: dict[str, Path], images: np.ndarray, labels: Sequence[int | None],
                 threads: int | None = None, min_time: float = 2.0) -> list[dict[str, str]]:
    """Side by side on ONNX Runtime: batch-1 latency (interleaved), agreement with the first file's
    predictions, and accuracy where every image has a label. Rows for ``format_table``."""
    runners = {name: runtime_runner(path, "onnxruntime", threads, spin=False) for name, path in paths.items()}
    outputs = {name: np.concatenate([run(images[i:i + 1]) for i in range(len(images))])
               for name, run in runners.items()}
    timed = time_interleaved({name: (lambda run=run: run(images[:1])) for name, run in runners.items()},
                             min_time=min_time)
    reference = next(iter(outputs.values()))
    labelled = all(label is not None for label in labels)
    rows = []
    for name, out in outputs.items():
        accuracy = float((out.argmax(1) == np.asarray(labels)).mean()) if labelled else None
        rows.append({
            "model": name,
            "bs1 ms": f"{timed.timings[name].median_ms:.2f}",
            "x first": f"{timed.ratios[name]:.2f}",
            "top-1 agree": f"{100 * top1_agreement(out, reference):.1f}%",
            "accuracy %": "-" if accuracy is None else f"{100 * accuracy:.2f}",
            "images": str(len(images)),
        })
    return rows


def compare_int8(model: nn.Module, info: DeployInfo, int8_path: Path, test_dir: str | Path, *, opset: int = 18,
                 dynamic_batch: bool = False, limit: int | None = 1000, threads: int | None = None
                 ) -> list[dict[str, str]]:
    """An int8 export against an fp32 export of the same ``model`` (made here, in a temporary folder) on the images
    under ``test_dir``: ``compare_onnx``'s rows."""
    images, labels = load_images(test_dir, info, limit)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", info, opset=opset, dynamic_batch=dynamic_batch).path
        return compare_onnx({"fp32": fp32, "int8": int8_path}, images, labels, threads)
