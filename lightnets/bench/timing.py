"""Timing callables the way the benchmark protocol asks: warm-up, then medians, interleaved when compared.

These machines are shared, so a background job can double a timing from one minute to the next.
``time_interleaved`` therefore runs the candidates in short alternating bursts: each sees the same
load, and the ratio of two candidates is the median of their per-round ratios, which stays honest
even when the absolute figures drift.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call: median and 90th percentile over ``runs`` calls."""

    median_ms: float
    p90_ms: float
    runs: int

    def per_second(self, items: int = 1) -> float:
        """Items per second at the median, e.g. images per second for a batch of ``items``."""
        return items * 1000.0 / self.median_ms

    @classmethod
    def from_seconds(cls, samples: list[float]) -> Timing:
        ms = sorted(s * 1000.0 for s in samples)
        p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
        return cls(statistics.median(ms), p90, len(ms))


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """What to call after a step so the clock sees finished work (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    if torch.device(device).type == "mps":
        return torch.mps.synchronize
    return lambda: None


def _timed(fn: Callable[[], object], sync: Callable[[], None], clock: Callable[[], float] = time.perf_counter
           ) -> float:
    start = clock()
    fn()
    sync()
    return clock() - start


def time_fn(fn: Callable[[], object], min_time: float = 2.0, warmup: int = 3, min_runs: int = 5,
            sync: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Warm up, then call ``fn`` until ``min_time`` seconds (wall clock) and ``min_runs`` calls have passed.

    ``clock`` times each call: the wall clock by default; ``time.thread_time`` counts only the calling thread's
    CPU time, so the time slices other processes get on a busy machine are left out (one-thread CPU work).
    """
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    end = time.perf_counter() + min_time
    while len(samples) < min_runs or time.perf_counter() < end:
        samples.append(_timed(fn, sync, clock))
    return Timing.from_seconds(samples)


@dataclass(frozen=True)
class Interleaved:
    """Timings of candidates measured in alternating bursts, and each one's ratio to a baseline."""

    timings: dict[str, Timing]
    ratios: dict[str, float]  # median over rounds of (candidate round median / baseline round median)
    baseline: str


def time_interleaved(fns: Mapping[str, Callable[[], object]], baseline: str | None = None, min_time: float = 2.0,
                     rounds: int = 10, warmup: int = 3, sync: Callable[[], None] = lambda: None,
                     clock: Callable[[], float] = time.perf_counter) -> Interleaved:
    """Time several callables side by side: ``rounds`` rounds, each a burst of every candidate in turn.

    Each candidate gets at least ``min_time`` seconds in all. The first call of each burst is discarded
    (it pays for the caches the previous candidate evicted), and the order rotates every round.
    ``clock`` times each call (see ``time_fn``).
    """
    names = list(fns)
    baseline = baseline or names[0]
    if baseline not in fns:
        raise ValueError(f"baseline {baseline!r} is not one of {names}")
    per_call: dict[str, float] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        sync()
        per_call[name] = max(_timed(fn, sync, clock), 1e-6)
    burst_time = min_time / rounds
    samples: dict[str, list[float]] = {n: [] for n in names}
    round_medians: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = fns[name]
            calls = max(2, int(burst_time / per_call[name]) + 1)
            _timed(fn, sync, clock)
            burst = [_timed(fn, sync, clock) for _ in range(calls)]
            samples[name] += burst
            round_medians[name].append(statistics.median(burst))
    ratios = {
        n: statistics.median(a / b for a, b in zip(round_medians[n], round_medians[baseline], strict=True))
        for n in names
    }
    return Interleaved({n: Timing.from_seconds(s) for n, s in samples.items()}, ratios, baseline)


def matmul_peak_gflops(threads: int | None = None, n: int = 2048, min_time: float = 1.0) -> dict[str, float]:
    """This machine's fp32 matrix-multiply rate in GFLOP/s, the ceiling a convolution network can approach,
    measured side by side for each library that has its own kernels: ``torch.mm`` (MKL) and, where
    installed, ONNX Runtime's MatMul (MLAS). They can differ by 2x: MKL picks its kernels by CPU vendor,
    MLAS by instruction set.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    fns: dict[str, Callable[[], object]] = {"torch.mm": lambda: torch.mm(a, b)}
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        run, a_np = _onnx_matmul(b.numpy(), threads), a.numpy()
        fns["onnxruntime MatMul"] = lambda: run(a_np)
    with thread_count(threads):
        timed = time_interleaved(fns, min_time=min_time, rounds=5)
    return {name: 2 * n**3 / (t.median_ms / 1000.0) / 1e9 for name, t in timed.timings.items()}


def _onnx_matmul(weight, threads: int | None) -> Callable[[object], object]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..deploy.runtimes import onnx_session

    n = weight.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(weight, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/matmul.onnx"
        onnx.save(model, path)
        session = onnx_session(path, threads)
    return lambda a: session.run(None, {"a": a})


@contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for a block and restore them afterwards; ``None`` leaves them alone."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
