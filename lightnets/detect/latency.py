"""Batch-1 latency of detectors, heads and decoding included, timed side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..bench import count
from ..bench.timing import Timing, thread_count, time_interleaved
from ..errors import LightnetsError
from .decode import Detections, decode
from .model import CenterNet, create_detector


@dataclass(frozen=True)
class DetectorLatency:
    """Batch-1 latency of a detector's forward pass plus decoding, with its size and cost; ``vs_first`` is its
    latency over the first detector's, measured side by side."""

    name: str
    input_size: int
    stacks: int
    params: int
    macs: int
    timing: Timing
    threads: int
    vs_first: float


def detector_latency(backbones: Sequence[str], *, num_classes: int = 1, stacks: int = 1, input_size: int = 512,
                     top_k: int = 100, threads: int | None = None, min_time: float = 2.0) -> list[DetectorLatency]:
    """Eval-mode, inference-mode batch-1 latency of (randomly initialised) detectors on each of ``backbones`` at
    ``input_size``, heads and top-K decoding included: warm-up, then at least ``min_time`` seconds each, timed
    side by side in alternating bursts (``time_interleaved``) so every detector sees the same machine load;
    median and p90 per detector."""
    if not backbones:
        raise LightnetsError("give at least one backbone to time")
    models = {name: create_detector(name, num_classes, stacks=stacks).eval() for name in dict.fromkeys(backbones)}
    counts = {name: count(model, input_size) for name, model in models.items()}
    x = torch.randn(1, 3, input_size, input_size)

    def runner(model: CenterNet) -> Callable[[], list[Detections]]:
        return lambda: decode(model(x)[-1], stride=model.output_stride, top_k=top_k)

    with thread_count(threads), torch.inference_mode():
        timed = time_interleaved({name: runner(model) for name, model in models.items()}, min_time=min_time)
        used = torch.get_num_threads()
    return [DetectorLatency(name, input_size, stacks, counts[name].params, counts[name].macs, timed.timings[name],
                            used, timed.ratios[name]) for name in models]
