"""Speed chosen by measurement: the precision, memory layout and thread count of a training run (``auto``).

Rules of thumb fail across CPUs (bf16 autocast is 2x faster than fp32 on a CPU with AVX512_BF16, 3x slower on
one with AVX-512 alone, 12x slower on AVX2), so ``choose_speed`` measures. A capability check narrows the
candidates (bf16 only where the CPU or GPU computes it natively; fp16 only on CUDA, and there only without bf16),
then a short probe times training steps (forward, backward, SGD) of each candidate on a copy of the actual
model at its input size: one warm-up step discarded, candidates interleaved round by round so that they share
the machine's load, medians. Precision and layout are chosen with all usable cores, then the thread count with
that precision and layout. The probe batch is the run's batch, or smaller where that is needed to stay within
the time budget (about 10 s). What the user gives explicitly is never probed, and the choice is cached per
machine (CPU model, flags, cores or GPU), torch version, model and its arguments, input, batch and the given
options, so a second run starts at once; an entry whose recorded key differs in anything is ignored.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import write_text_atomically
from ..data.dataset import cache_dir
from ..errors import LightnetsError
from ..models.base import FROZEN_BF16, LightNet, autocast_for, set_frozen_amp
from .machine import cpu_info, cuda_native_bf16, device_key, usable_cores
from .timing import synchronizer, thread_count

AUTO = "auto"
CACHE_VERSION = 1


def precision_name(amp: str | None) -> str:
    return amp or "fp32"


def has_frozen_prefix(model: nn.Module) -> bool:
    return any(isinstance(m, LightNet) and m.frozen_stages > 0 for m in model.modules())


@dataclass(frozen=True)
class Candidate:
    """One way to run a training step: autocast precision (None: fp32), layout, intra-op threads (None: torch's)."""

    amp: str | None
    channels_last: bool
    threads: int | None

    def label(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        threads = "" if self.threads is None else f", {self.threads} thread{'s' * (self.threads != 1)}"
        return f"{precision_name(self.amp)}, {layout}{threads}"

    def differs(self, other: Candidate) -> str:
        """What sets this candidate apart from ``other``, in the words of the summary line."""
        parts = []
        if self.amp != other.amp:
            parts.append(precision_name(self.amp))
        if self.channels_last != other.channels_last:
            parts.append("channels_last" if self.channels_last else "NCHW")
        if self.threads != other.threads and self.threads is not None:
            parts.append(f"{self.threads} thread{'s' * (self.threads != 1)}")
        return " ".join(parts)


@dataclass
class SpeedChoice:
    """What a run computes with, and why: ``how`` is ``measured``, ``cached``, ``given`` (every option explicit)
    or ``recorded`` (a resumed run's). ``ratios`` are the probe's: each other candidate's training img/s over the
    chosen one's, measured side by side; ``notes`` say which candidates were left out and why."""

    amp: str | None
    channels_last: bool
    threads: int | None
    how: str
    ratios: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    probe_batch: int | None = None
    probe_s: float | None = None

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.amp, self.channels_last, self.threads)

    def line(self) -> str:
        """One line for the start of a run: ``auto: fp32, channels_last, 2 threads - bf16 0.31x, NCHW 0.90x``."""
        head = f"{'auto' if self.how in ('measured', 'cached') else self.how}: {self.candidate.label()}"
        if self.how == "measured":
            head += f" (probe {self.probe_s:.1f} s at batch {self.probe_batch})"
        elif self.how == "cached":
            head += " (cached probe)"
        figures = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in self.ratios.items())
        return head + (f" - {figures}" if figures else "") + "".join(f"; {note}" for note in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SpeedChoice:
        return cls(**record)


def _tensors(output: Any) -> Iterable[torch.Tensor]:
    """Every floating-point tensor in a model's output (a tensor, or a tuple, list or dict of them)."""
    if isinstance(output, torch.Tensor):
        if output.is_floating_point():
            yield output
    elif isinstance(output, dict):
        for value in output.values():
            yield from _tensors(value)
    elif isinstance(output, (list, tuple)):
        for value in output:
            yield from _tensors(value)


def training_step(model: nn.Module, batch: torch.Tensor, amp: str | None) -> Callable[[], None]:
    """A forward, backward and SGD step of ``model`` (changed by it: give a copy) on ``batch``; the loss is the
    mean of every output, which costs what a real loss on those outputs costs to back-propagate."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    model.train()
    set_frozen_amp(model, amp)

    def step() -> None:
        with autocast_for(batch.device, amp):
            loss = sum(t.float().mean() for t in _tensors(model(batch)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def native_precisions(device: torch.device, frozen: bool = False) -> tuple[list[str | None], list[str]]:
    """The autocast precisions worth probing on ``device`` (fp32 always) and notes on those left out; ``frozen``
    (the model has frozen stages) adds bf16 for those stages alone wherever bf16 is native."""
    bf16 = ["bf16", FROZEN_BF16] if frozen else ["bf16"]
    if device.type == "cuda":
        if cuda_native_bf16(device):
            return [None, *bf16], []
        return [None, "fp16"], ["bf16 not tried: this GPU has no bf16 units (compute capability < 8.0)"]
    if device.type == "cpu":
        if cpu_info().native_bf16:
            return [None, *bf16], []
        return [None], ["bf16 not tried: this CPU has no bf16 instructions (it would be emulated)"]
    return [None], [f"{device.type}: fp32 only"]


def thread_options(cores: int) -> list[int]:
    """Thread counts to probe, most first: all cores, half, a quarter, one."""
    return sorted({max(1, cores // d) for d in (1, 2, 4)} | {1}, reverse=True)


class _Steps:
    """Training steps of copies of one model, one copy per layout and frozen-stage precision, on random inputs of
    a given shape."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> None:
        self.model, self.input_shape, self.device = model, input_shape, device
        self.copies: dict[tuple[bool, bool], nn.Module] = {}

    def __call__(self, c: Candidate, batch: int) -> Callable[[], None]:
        key = (c.channels_last, c.amp == FROZEN_BF16)
        if key not in self.copies:
            memory = torch.channels_last if c.channels_last else torch.contiguous_format
            self.copies[key] = copy.deepcopy(self.model).to(self.device, memory_format=memory)
        x = torch.randn(batch, *self.input_shape, device=self.device)
        x = x.contiguous(memory_format=torch.channels_last) if c.channels_last else x
        return training_step(self.copies[key], x, c.amp)


def _measure(steps: dict[Candidate, Callable[[], None]], rounds: int, sync: Callable[[], None]
             ) -> dict[Candidate, float]:
    """Median seconds per step of each candidate: one warm-up step each (discarded), then ``rounds`` rounds of
    one step each, the order rotating every round so that no candidate always runs after the same one."""
    order = list(steps)
    samples: dict[Candidate, list[float]] = {c: [] for c in order}
    for r in range(rounds + 1):
        for c in order[r % len(order):] + order[:r % len(order)]:
            with thread_count(c.threads):
                start = time.perf_counter()
                steps[c]()
                sync()
                if r > 0:
                    samples[c].append(time.perf_counter() - start)
    return {c: statistics.median(s) for c, s in samples.items()}


def candidate_rates(model: nn.Module, input_shape: tuple[int, ...], batch: int, candidates: list[Candidate],
                    device: str | torch.device = "cpu", rounds: int = 3) -> dict[Candidate, float]:
    """Training images per second of each candidate at ``batch``, measured side by side (see ``_measure``)."""
    dev = torch.device(device)
    steps = _Steps(model, input_shape, dev)
    seconds = _measure({c: steps(c, batch) for c in candidates}, rounds, synchronizer(dev))
    return {c: batch / s for c, s in seconds.items()}


MIN_PROBE_BATCH = 16  # see _probe_batch


def _probe_batch(steps: _Steps, c: Candidate, batch: int, seconds_per_image_budget: float,
                 sync: Callable[[], None]) -> int:
    """The largest batch up to ``batch`` whose steps fit the budget: a step at batch 2 (after a warm-up) gives
    the cost per image, and one more step at the batch that suggests corrects it (small batches overstate it).

    Never below ``MIN_PROBE_BATCH`` (or ``batch``), even past the budget: tiny batches rank layouts wrongly. On the
    2-core Xeon (AVX-512, 1 thread, EfficientNet-Lite0 at 96 px) NCHW trained 1.4x faster than channels_last at
    batch 2 but 0.80x, 0.71x, 0.69x and 0.59x as fast at batches 8, 16, 32 and 64.
    """
    n = fit = min(batch, 2)
    with thread_count(c.threads):
        step = steps(c, n)
        step()
        for _ in range(2):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            fit = int(max(2, min(batch, seconds_per_image_budget * n / (time.perf_counter() - t0))))
            if fit <= 2 * n:
                break
            n = fit
            step = steps(c, n)
            step()  # a new shape: warm up again
    n = min(n, fit)
    return max(n - n % 8 if n >= 16 else n, min(batch, MIN_PROBE_BATCH))


def probe_speed(model: nn.Module, input_shape: tuple[int, ...], batch: int, device: str | torch.device = "cpu", *,
                amp: str | None = AUTO, channels_last: bool | str = AUTO, threads: int | None = None,
                processes: int = 1, budget_s: float = 10.0, rounds: int = 3) -> SpeedChoice:
    """Measure the candidates for ``model`` (left unchanged: the probe trains copies) on inputs of ``input_shape``
    (channels, height, width) and pick the fastest training step. ``amp``, ``channels_last`` and ``threads`` fix
    their dimension unless they are ``"auto"`` (threads: None); ``processes`` share the cores (DDP on a CPU)."""
    dev = torch.device(device)
    if amp == "fp16" and dev.type != "cuda":
        raise LightnetsError(f"fp16 autocast needs a CUDA device (this one is {dev.type}); use --amp bf16 or auto")
    precisions, notes = native_precisions(dev, has_frozen_prefix(model)) if amp == AUTO else ([amp], [])
    layouts = [True, False] if channels_last == AUTO else [bool(channels_last)]
    if dev.type != "cpu":
        thread_counts: list[int | None] = [None]
    elif threads is not None:
        thread_counts = [threads]
    else:
        thread_counts = list(thread_options(max(1, usable_cores() // processes)))
    first = [Candidate(p, layout, thread_counts[0]) for p in precisions for layout in layouts]
    measured = list(first)
    if amp in ("bf16", FROZEN_BF16) and dev.type == "cpu" and not cpu_info().native_bf16:
        measured.append(Candidate(None, layouts[0], thread_counts[0]))  # only to state the slowdown chosen
    if len(measured) == 1 and len(thread_counts) == 1:
        c = first[0]
        return SpeedChoice(c.amp, c.channels_last, c.threads, "given", notes=notes)

    started = time.perf_counter()
    sync = synchronizer(dev)
    steps = _Steps(model, input_shape, dev)
    # Steps in all, in units of one all-core step: each candidate's warm-up and rounds; fewer threads cost more.
    cost = len(measured) + (1 + sum(thread_counts[0] / t for t in thread_counts[1:]) if len(thread_counts) > 1 else 0)
    n = _probe_batch(steps, measured[0], batch, 0.8 * budget_s / (cost * (rounds + 1)), sync)

    seconds = _measure({c: steps(c, n) for c in measured}, rounds, sync)
    best = min(first, key=seconds.__getitem__)
    if len(measured) > len(first):
        notes = [f"this CPU has no bf16 instructions: emulated bf16 took {seconds[best] / seconds[measured[-1]]:.2f}x "
                 "the time of fp32 per step here (--amp auto picks fp32)"]
    relative = {c: seconds[best] / seconds[c] for c in measured}  # img/s over the stage winner's
    rates = {c.label(): n / seconds[c] for c in measured}
    if len(thread_counts) > 1:
        second = [best] + [Candidate(best.amp, best.channels_last, t) for t in thread_counts[1:]]
        seconds = _measure({c: steps(c, n) for c in second}, rounds, sync)
        winner = min(second, key=seconds.__getitem__)
        relative = {c: r * seconds[winner] / seconds[best] for c, r in relative.items()}
        relative |= {c: seconds[winner] / seconds[c] for c in second}
        rates |= {c.label(): n / seconds[c] for c in second[1:]}
        best = winner
    ratios = {c.differs(best): r for c, r in relative.items() if c != best}
    return SpeedChoice(best.amp, best.channels_last, best.threads, "measured", ratios, rates, notes, n,
                       time.perf_counter() - started)


def _cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "speed" / f"{digest}.json"


def _cache_get(key: dict[str, Any]) -> dict[str, Any] | None:
    """The cache entry stored under exactly ``key``; anything unreadable or recorded under another key (another
    machine, torch or file) is ignored, never trusted."""
    try:
        entry = json.loads(_cache_path(key).read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("key") == json.loads(json.dumps(key)) else None


def _cache_put(key: dict[str, Any], entry: dict[str, Any]) -> None:
    """Store ``entry`` under ``key``; a read-only or full cache costs a measurement next time, nothing more."""
    with contextlib.suppress(OSError):
        write_text_atomically(_cache_path(key), json.dumps({"key": key, **entry}, indent=1))


def choose_speed(model: nn.Module, input_shape: tuple[int, ...], batch: int, device: str | torch.device = "cpu", *,
                 amp: str | None = AUTO, channels_last: bool | str = AUTO, threads: int | None = None,
                 processes: int = 1, cache_key: dict[str, Any] | None = None, budget_s: float = 10.0) -> SpeedChoice:
    """``probe_speed``, or its cached answer: ``cache_key`` names the model (its name and arguments, the number of
    classes) so that the entry is reused only for the same model, input, batch, options, machine and torch."""
    if threads is not None and threads < 1:
        raise LightnetsError(f"threads must be >= 1, got {threads}")
    key = None
    if cache_key is not None:
        key = {"version": CACHE_VERSION, "machine": device_key(device), "model": cache_key,
               "input": list(input_shape), "batch": batch, "processes": processes,
               "given": {"amp": amp, "channels_last": channels_last, "threads": threads}}
        entry = _cache_get(key)
        try:
            cached = SpeedChoice.from_dict(entry["choice"]) if entry else None
        except (KeyError, TypeError):
            cached = None
        if cached is not None:
            cached.how = "cached"
            return cached
    choice = probe_speed(model, input_shape, batch, device, amp=amp, channels_last=channels_last, threads=threads,
                         processes=processes, budget_s=budget_s)
    if key is not None and choice.how == "measured":
        _cache_put(key, {"choice": choice.to_dict()})
    return choice


def deploy_runtimes() -> tuple[list[str], list[str]]:
    """The deploy runtimes that can run here, and notes on those left out: bf16 needs native bf16 instructions."""
    from ..deploy.runtimes import RUNTIMES, runtime_missing

    usable, notes = [], []
    for runtime in RUNTIMES:
        why = runtime_missing(runtime)
        if why is None and runtime.endswith("bf16") and not cpu_info().native_bf16:
            why = "this CPU has no bf16 instructions"
        if why is None:
            usable.append(runtime)
        else:
            notes.append(f"{runtime}: {why}")
    return usable, notes


def choose_runtime(path: str | Path, threads: int | None = None, min_time: float = 0.3) -> tuple[str, str]:
    """The fastest runtime installed here for the ONNX file at ``path`` (batch-1 latency, interleaved), and a line
    saying what was measured. Cached per file content, machine and thread count."""
    import numpy as np

    from ..deploy.runtimes import input_batch, load_onnx, runtime_runner
    from .timing import time_interleaved

    usable, notes = deploy_runtimes()
    if not usable:
        raise LightnetsError(f"no ONNX runtime can run here ({'; '.join(notes)}): pip install 'lightnets[onnx]'")
    blob = Path(path).read_bytes()
    key = {"version": CACHE_VERSION, "machine": device_key("cpu"), "file": hashlib.sha256(blob).hexdigest(),
           "threads": threads, "runtimes": usable}
    entry = _cache_get(key)
    if entry and isinstance(entry.get("runtime"), str) and isinstance(entry.get("line"), str):
        return entry["runtime"], entry["line"] + " (cached)"
    if len(usable) == 1:
        return usable[0], f"runtime: {usable[0]}, the only one installed here"
    graph = load_onnx(path).graph.input[0].type.tensor_type.shape
    shape = [input_batch(path) or 1] + [d.dim_value for d in graph.dim[1:]]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    runners = {r: runtime_runner(path, r, threads, spin=False) for r in usable}
    timed = time_interleaved({r: (lambda run=run: run(x)) for r, run in runners.items()}, min_time=min_time)
    fastest = min(usable, key=lambda r: timed.timings[r].median_ms)
    others = ", ".join(f"{r} {timed.timings[fastest].median_ms / timed.timings[r].median_ms:.2f}x"
                       for r in usable if r != fastest)
    line = (f"runtime auto: {fastest} ({timed.timings[fastest].median_ms:.2f} ms at batch {shape[0]}) - {others}"
            + "".join(f"; {n}" for n in notes))
    _cache_put(key, {"runtime": fastest, "line": line})
    return fastest, line
