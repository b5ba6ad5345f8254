"""Batch-1 latency of segmenters, eager and on the deploy path (BN folded, ONNX Runtime), timed side by side."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bench import count
from ..bench.backends import backend_missing, check_backends, make_runner
from ..bench.timing import Timing, thread_count, time_interleaved
from ..deploy.runtimes import RUNTIMES, runtime_missing
from ..errors import LightnetsError
from .deploy import export_segmenter
from .model import Segmenter, create_segmenter


@dataclass(frozen=True)
class SegmenterLatency:
    """Batch-1 latency of one model on one backend at one input size (H, W), with its size and cost; ``vs_first`` is
    its latency over the first model's on the same backend at that size, measured side by side. ``status`` is 'ok'
    or 'skipped: why' (then ``timing`` and ``vs_first`` are None)."""

    name: str
    backend: str
    input_size: tuple[int, int]
    params: int
    macs: int
    timing: Timing | None
    threads: int
    vs_first: float | None
    status: str = "ok"


def time_segmenters(models: Mapping[str, nn.Module], size: tuple[int, int], backends: Sequence[str] = ("eager",
                    "onnxruntime"), *, threads: int | None = None, min_time: float = 2.0,
                    onnx_paths: Mapping[str, str | Path] | None = None) -> list[SegmenterLatency]:
    """Eval-mode, inference-mode batch-1 latency of ready models (any ``nn.Module`` taking a ``(1, 3, H, W)``
    batch, so a peer's can be timed beside ours) on each backend at ``size``: per backend, every model in
    alternating bursts (``time_interleaved``), at least ``min_time`` seconds each, so all see the same load.

    Rows go model by model, backends in the order given. An ONNX runtime runs the model's file in ``onnx_paths``
    (batch and height/width free, or fixed to ``size``), else, for a :class:`Segmenter`, its
    :func:`export_segmenter` export at ``size`` in a temporary folder. A backend that cannot run here
    (``backend_missing``) gives rows marked skipped.
    """
    if not models:
        raise LightnetsError("give at least one model to time")
    backends = check_backends(list(backends))
    size = (int(size[0]), int(size[1]))
    onnx_paths = dict(onnx_paths or {})
    exporting = any(name not in onnx_paths for name in models)
    # with every file given, a runtime needs only itself, not the exporter's packages
    missing = {b: backend_missing(b) if exporting or b not in RUNTIMES else runtime_missing(b) for b in backends}
    wanted = [b for b in backends if b in RUNTIMES and not missing[b]]
    for name, model in models.items():
        if wanted and name not in onnx_paths and not isinstance(model, Segmenter):
            raise LightnetsError(f"{name} is not a lightnets Segmenter: give its ONNX file in onnx_paths to time it "
                                 f"on {wanted[0]}")
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    counts = {name: count(model.eval(), size) for name, model in models.items()}
    with thread_count(threads), tempfile.TemporaryDirectory() as tmp:
        used = torch.get_num_threads()
        if wanted:
            for i, name in enumerate(models):
                if name not in onnx_paths:
                    onnx_paths[name] = export_segmenter(models[name], Path(tmp) / f"{i}.onnx", input_size=size).path
        # One interleaved group per backend: an ONNX Runtime run slowed the eager run after it (LR-ASPP at 480x360
        # timed 1.31x torchvision's when mixed with the deploy runs, 0.99x in a group of its own).
        timed = {b: time_interleaved({name: make_runner(b, model, onnx_paths.get(name), used)(x)
                                      for name, model in models.items()}, min_time=min_time)
                 for b in backends if not missing[b]}
    rows = []
    for name in models:
        for b in backends:
            params, macs = counts[name].params, counts[name].macs
            if missing[b]:
                rows.append(SegmenterLatency(name, b, size, params, macs, None, used, None, f"skipped: {missing[b]}"))
            else:
                rows.append(SegmenterLatency(name, b, size, params, macs, timed[b].timings[name], used,
                                             timed[b].ratios[name]))
    return rows


def segmenter_latency(specs: Sequence[Mapping[str, Any]], sizes: Sequence[tuple[int, int]] = ((360, 480),
                      (1024, 2048)), backends: Sequence[str] = ("eager", "onnxruntime"), threads: int | None = None,
                      min_time: float = 2.0) -> list[SegmenterLatency]:
    """Batch-1 latency of randomly initialised segmenters at each input size (H, W) on each backend: the
    ``time_segmenters`` rows of every size in turn, the (spec, backend) pairs of a size timed side by side.

    Each spec holds ``create_segmenter``'s arguments and a ``name`` for the table, e.g.
    ``{"name": "lraspp-128", "backbone": "mobilenetv3_large_100", "num_classes": 11, "head": "lraspp"}``.
    """
    if not specs:
        raise LightnetsError("give at least one segmenter spec to time")
    models: dict[str, nn.Module] = {}
    for spec in specs:
        args = dict(spec)
        name = args.pop("name", None)
        if not isinstance(name, str) or not name:
            raise LightnetsError(f"every segmenter spec needs a 'name' for the table, got {dict(spec)!r}")
        if name in models:
            raise LightnetsError(f"two segmenter specs are named {name!r}")
        models[name] = create_segmenter(**args).eval()
    return [row for size in sizes
            for row in time_segmenters(models, size, backends, threads=threads, min_time=min_time)]
