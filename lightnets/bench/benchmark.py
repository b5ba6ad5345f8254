"""The speed table: per model and backend, latency, throughput, training step rate, and checks.

Backends of one model are timed side by side (``time_interleaved``), so the ``x eager`` column
is a ratio measured under the same load even on a busy machine. Every backend's logits on a test
batch are compared with eager PyTorch's, so a fast backend that changes predictions shows it.
"""

from __future__ import annotations

import copy
import csv
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .._plot import headless_pyplot
from ..deploy.runtimes import RUNTIMES
from ..errors import LightnetsError
from .backends import TRAINABLE, backend_missing, check_backends, make_runner, to_numpy
from .count import count
from .probe import AUTO, probe_speed, training_step
from .timing import synchronizer, thread_count, time_fn, time_interleaved

if TYPE_CHECKING:
    from ..deploy import DeployInfo

CIFAR10_TRAIN_IMAGES = 50_000
CIFAR10_TEST_IMAGES = 10_000


@dataclass
class BenchResult:
    """One model on one backend. ``status`` is 'ok', 'skipped: why' or 'failed: why'."""

    model: str
    backend: str
    status: str
    device: str
    threads: int
    input_size: int
    params: int
    macs: int
    latency_ms: float | None = None  # batch 1, median
    latency_p90_ms: float | None = None
    vs_eager: float | None = None  # batch-1 latency / eager's, measured interleaved
    gflops: float | None = None  # achieved at batch 1: 2 * MACs / latency
    throughput: dict[int, float] = field(default_factory=dict)  # batch size -> images/s
    max_abs_diff: float | None = None  # against eager logits on the test batch
    top1_agree: float | None = None  # share of the test batch with eager's top class
    train_img_s: float | None = None  # full training step (forward, backward, SGD)
    train_epoch_s: float | None = None  # CIFAR-10's 50,000 images at that rate
    train_amp: str | None = None  # the training step's autocast precision (None: fp32)
    accuracy: float | None = None  # top-1 recorded in the checkpoint

    def flat(self) -> dict[str, object]:
        """A flat record for json/csv: one ``throughput_bsN`` column per batch size."""
        record = asdict(self)
        for batch, rate in record.pop("throughput").items():
            record[f"throughput_bs{batch}"] = rate
        return record


def train_step(model: nn.Module, batch: int, input_size: int, device: str,
               memory_format: torch.memory_format = torch.contiguous_format, amp: str | None = None
               ) -> Callable[[], object]:
    """One SGD step (forward, backward, update) under ``amp`` autocast on a fixed random batch of a copy of
    ``model`` (``lightnets.bench.probe.training_step``)."""
    model = copy.deepcopy(model).to(device, memory_format=memory_format)
    x = torch.randn(batch, getattr(model, "in_chans", 3), input_size, input_size, device=device)
    return training_step(model, x.contiguous(memory_format=memory_format), amp)


def run_benchmark(
    models: Sequence[str],
    *,
    input_size: int | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    backends: Sequence[str] = ("eager",),
    threads: int | None = None,
    device: str = "cpu",
    train: bool = False,
    train_batch: int = 128,
    train_amp: str | None = "auto",
    min_time: float = 2.0,
    log: Callable[[str], None] = lambda msg: None,
) -> list[BenchResult]:
    """Measure every model (a registered name or a checkpoint) on every backend; see ``BenchResult``.

    Batch 1 gives the latency (median and p90 of at least ``min_time`` seconds per backend); each
    larger batch size gives a throughput. Backends that are not installed are reported, not raised.
    The training step runs under ``train_amp`` autocast; ``"auto"`` measures which precision is faster here,
    as ``lightnets train`` does.
    """
    from ..deploy import load_for_deploy

    backends = check_backends(list(backends))
    if not batch_sizes or min(batch_sizes) < 1:
        raise LightnetsError(f"batch sizes must be integers >= 1, got {list(batch_sizes)}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise LightnetsError("device 'cuda' was asked for but torch sees no CUDA device")
    results = []
    with thread_count(threads):
        for name in models:
            model, info = load_for_deploy(name)
            if name != info.model_name:  # a checkpoint: say which one
                info = replace(info, model_name=f"{info.model_name} ({name})")
            size = input_size or info.input_size
            log(f"{name}: {', '.join(backends)} at {size}x{size}")
            results += _bench_model(model, replace(info, input_size=size), backends, sorted(set(batch_sizes)),
                                    device, train, train_batch, train_amp, min_time)
    return results


def _bench_model(model: nn.Module, info: DeployInfo, backends: list[str], batch_sizes: list[int], device: str,
                 train: bool, train_batch: int, train_amp: str | None, min_time: float) -> list[BenchResult]:
    from ..deploy import export_onnx, top1_agreement

    size = info.input_size
    counts = count(model, size)
    model = model.to(device).eval()
    base = BenchResult(info.model_name, "", "ok", device, torch.get_num_threads(), size, counts.params, counts.macs,
                       accuracy=info.top1)
    results = {b: replace(base, backend=b, throughput={}) for b in backends}
    generator = torch.Generator().manual_seed(0)
    test = torch.randn(max(batch_sizes), model.in_chans, size, size, generator=generator).to(device)
    with torch.inference_mode():
        reference = to_numpy(model(test))
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = None
        for b in backends:
            why = backend_missing(b, device)
            if why:
                results[b].status = f"skipped: {why}"
                continue
            try:
                if b in RUNTIMES and onnx_path is None:
                    onnx_path = export_onnx(model, Path(tmp) / "model.onnx", info, dynamic_batch=True).path
                runner = make_runner(b, model, onnx_path, torch.get_num_threads())
                out = to_numpy(runner(test)())
            except Exception as err:  # a backend that cannot handle this model is a result, not a crash
                results[b].status = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
                continue
            results[b].max_abs_diff = float(np.abs(out - reference).max())
            results[b].top1_agree = top1_agreement(out, reference)
            runners[b] = runner
        if runners:
            _time(model, info, runners, results, batch_sizes, device, min_time)
        if train:
            _time_training(model, [b for b in TRAINABLE if b in runners], results, train_batch, size, device,
                           train_amp, min_time)
    return list(results.values())


def _time(model: nn.Module, info: DeployInfo, runners: dict[str, Callable], results: dict[str, BenchResult],
          batch_sizes: list[int], device: str, min_time: float) -> None:
    baseline = "eager" if "eager" in runners else next(iter(runners))
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(1)
    for batch in batch_sizes:
        x = torch.randn(batch, model.in_chans, info.input_size, info.input_size, generator=generator).to(device)
        timed = time_interleaved({b: r(x) for b, r in runners.items()}, baseline, min_time, sync=sync)
        for b, timing in timed.timings.items():
            res = results[b]
            res.throughput[batch] = timing.per_second(batch)
            if batch == 1:
                res.latency_ms, res.latency_p90_ms = timing.median_ms, timing.p90_ms
                res.gflops = 2 * res.macs / (timing.median_ms / 1000) / 1e9
                res.vs_eager = timed.ratios[b] if baseline == "eager" else None


def _time_training(model: nn.Module, backends: list[str], results: dict[str, BenchResult], batch: int, size: int,
                   device: str, amp: str | None, min_time: float) -> None:
    if not backends:
        return
    if amp == AUTO:
        amp = probe_speed(model, (model.in_chans, size, size), batch, device, channels_last=True,
                          threads=torch.get_num_threads() if torch.device(device).type == "cpu" else None).amp
    formats = {"eager": torch.contiguous_format, "channels_last": torch.channels_last}
    steps = {b: train_step(model, batch, size, device, formats[b], amp) for b in backends}
    sync = synchronizer(device)
    if len(steps) == 1:  # nothing to interleave with; a training step is slow, so spend few on warm-up
        timings = {b: time_fn(step, min_time, warmup=1, min_runs=3, sync=sync) for b, step in steps.items()}
    else:
        timings = time_interleaved(steps, backends[0], min_time, rounds=3, warmup=1, sync=sync).timings
    for b, timing in timings.items():
        results[b].train_img_s = timing.per_second(batch)
        results[b].train_epoch_s = CIFAR10_TRAIN_IMAGES / results[b].train_img_s
        results[b].train_amp = amp


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def result_rows(results: Sequence[BenchResult]) -> list[dict[str, str]]:
    """Table rows for ``format_table``/``format_markdown``; columns nobody measured are left out."""
    batches = sorted({b for r in results for b in r.throughput if b > 1})
    rows = []
    for r in results:
        row = {
            "model": r.model,
            "backend": r.backend,
            "params M": f"{r.params / 1e6:.2f}",
            "GMACs": f"{r.macs / 1e9:.3f}",
            "bs1 ms": _num(r.latency_ms, ".2f"),
            "p90 ms": _num(r.latency_p90_ms, ".2f"),
            "x eager": _num(r.vs_eager, ".2f"),
            "GFLOP/s": _num(r.gflops, ".1f"),
        }
        row |= {f"img/s bs{b}": _num(r.throughput.get(b), ".0f") for b in batches}
        row["max diff"] = _num(r.max_abs_diff, ".1e")
        row["top-1 agree"] = "-" if r.top1_agree is None else f"{100 * r.top1_agree:.0f}%"
        row["train img/s"] = _num(r.train_img_s, ".0f")
        row["train amp"] = "-" if r.train_img_s is None else r.train_amp or "fp32"
        row["epoch s"] = _num(r.train_epoch_s, ".0f")
        row["acc %"] = _num(None if r.accuracy is None else 100 * r.accuracy, ".2f")
        row["status"] = r.status
        rows.append(row)
    empty = [h for h in rows[0] if h != "status" and all(row[h] == "-" for row in rows)]
    if all(row["status"] == "ok" for row in rows):
        empty.append("status")
    return [{h: v for h, v in row.items() if h not in empty} for row in rows]


def write_results(results: Sequence[BenchResult], path: str | Path) -> Path:
    """Write the results as ``.json`` (a list of records) or ``.csv`` (one row each), by the file's suffix."""
    path = Path(path)
    records = [r.flat() for r in results]
    if path.suffix == ".json":
        path.write_text(json.dumps(records, indent=2) + "\n")
    elif path.suffix == ".csv":
        columns = list(dict.fromkeys(k for rec in records for k in rec))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(records)
    else:
        raise LightnetsError(f"cannot write results to {str(path)!r}: use a .json or .csv file")
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both, sorted by latency."""
    front: list[tuple[float, float]] = []
    for latency, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((latency, acc))
    return front


def plot_accuracy_latency(results: Sequence[BenchResult], path: str | Path, title: str = "") -> Path:
    """Accuracy against batch-1 latency, one marker per model and backend, with the Pareto front drawn."""
    points = [r for r in results if r.accuracy is not None and r.latency_ms is not None]
    if not points:
        raise LightnetsError("--plot needs checkpoints that record their accuracy; none of the models has one")
    plt = headless_pyplot()
    if plt is None:
        raise LightnetsError("plotting needs matplotlib: pip install 'lightnets[plot]'")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in dict.fromkeys(r.backend for r in points):
        mine = [r for r in points if r.backend == backend]
        ax.scatter([r.latency_ms for r in mine], [100 * r.accuracy for r in mine], label=backend)
        for r in mine:
            ax.annotate(r.model, (r.latency_ms, 100 * r.accuracy), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    front = pareto_front([(r.latency_ms, 100 * r.accuracy) for r in points])
    ax.plot(*zip(*front, strict=True), "k--", lw=1, label="Pareto front")
    ax.set_xlabel("batch-1 latency, ms (median)")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
