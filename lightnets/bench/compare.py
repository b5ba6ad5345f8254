"""Exported files side by side: the fp32-versus-int8 comparison ``lightnets export --int8 --test`` prints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..deploy.onnx import top1_agreement
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
