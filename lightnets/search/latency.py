"""Latency lookup tables: every distinct layer configuration timed once, a network's latency predicted as the sum.

NetAdapt and MnasNet's observation: a layer's latency is fixed by its configuration (channels in and out,
kernel, stride, input resolution), so a table measured once per device replaces measuring each candidate.
Entries are keyed by the layer's configuration and input resolution (``"block k5 s2 in24 exp96 ... @32x32"``);
the table file also records the device it was measured on (CPU model or GPU name, threads, torch version)
and refuses to mix in measurements from another. Timing follows the benchmark protocol: batch 1, eval mode,
``torch.inference_mode``, warm-up, then the median of at least ``min_time`` seconds of runs.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .._io import write_text_atomically
from ..bench import Timing, cpu_name, thread_count, time_fn, time_interleaved
from ..bench.backends import make_runner
from ..bench.timing import synchronizer
from ..errors import LightnetsError
from ..models.mnas_space import Arch, Layer
from .space import STAGE_FIELDS, SearchSpace

FORMAT = "lightnets-latency-table"
Shape = tuple[int, int, int, int]


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def private_cache_bytes(caches: Path = Path("/sys/devices/system/cpu/cpu0/cache"), default: int = 1 << 20) -> int:
    """Size of one core's largest private cache (L2 on current x86 and Arm servers), from the first core's
    sysfs ``caches``; ``default`` where the kernel does not say (not Linux, or a container without sysfs)."""
    best = 0
    for index in caches.glob("index*"):
        try:
            shared = (index / "shared_cpu_list").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if shared == "0" and size[:-1].isdigit():
            best = max(best, int(size[:-1]) << {"K": 10, "M": 20}.get(size[-1], 0))
    return best or default


WEIGHT_BYTES = private_cache_bytes()


def device_description(device: str = "cpu", threads: int | None = None, clock: str = "wall") -> dict[str, Any]:
    """What a timing depends on besides the layer: the processor, the thread count, the torch build, the clock."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {"device": dev.type, "name": name, "threads": threads or torch.get_num_threads(),
            "torch": torch.__version__, "clock": clock, "weight_bytes": WEIGHT_BYTES}


def check_clock(clock: str, device: str, threads: int | None) -> Callable[[], float]:
    """The timer for ``clock``. The CPU clock counts one thread's CPU time, so it needs one CPU thread; it leaves
    out the time slices other processes get, though not their contention for caches and memory (nor, in a
    virtual machine, the time the host takes the core away)."""
    if clock not in CLOCKS:
        raise LightnetsError(f"unknown clock {clock!r}; choose from {', '.join(CLOCKS)}")
    if clock == "cpu" and (torch.device(device).type != "cpu" or threads != 1):
        raise LightnetsError("the cpu clock times one thread's CPU time: use it with --device cpu --threads 1")
    return CLOCKS[clock]


def timed_layers(arch: Arch, input_size: int, num_classes: int, in_chans: int = 3) -> list[tuple[str, Layer, Shape]]:
    """``(table key, layer, batch-1 input shape)`` for every layer of ``arch`` at ``input_size``, in order."""
    out, side = [], input_size
    for layer in arch.layers(num_classes, in_chans):
        out.append((f"{layer.key} @{side}x{side}", layer, (1, layer.in_chs, side, side)))
        side = -(-side // layer.stride)
    return out


def space_layers(space: SearchSpace, input_size: int | None = None, num_classes: int | None = None
                 ) -> dict[str, tuple[Layer, Shape]]:
    """Every distinct layer any member of ``space`` can contain, keyed as in the table.

    Members are enumerated per stage, not per network: for each width multiplier and each stage's
    (kernel, expansion, SE) choice, a member with the stage at its greatest depth holds that stage's
    first block and its repeated block, and stages do not change one another's layers.
    """
    size, classes = input_size or space.input_size, num_classes or space.num_classes
    layers: dict[str, tuple[Layer, Shape]] = {}
    for width in space.width_mults:
        for i, choices in enumerate(space.stages):
            for kernel in choices.kernels:
                for expand in choices.expands:
                    for se in choices.se:
                        picks = [{f: c.options(f)[0] for f in STAGE_FIELDS} for c in space.stages]
                        picks[i] = {"kernel": kernel, "expand": expand, "se": se, "layers": max(choices.layers)}
                        arch = space.build(width, picks)
                        layers |= {key: (layer, shape) for key, layer, shape in timed_layers(arch, size, classes)}
    return layers


def _runner(build: Callable[[], nn.Module], shape: Shape, device: str, weight_bytes: int) -> Callable[[], object]:
    first = build()
    size = sum(p.numel() * p.element_size() for p in first.parameters())
    modules = [first] + [build() for _ in range(min(255, weight_bytes // max(size, 1)))]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    runs = itertools.cycle([make_runner("eager", m.to(device).eval())(x) for m in modules])
    return lambda: next(runs)()


def measure(build: Callable[[], nn.Module], shape: Shape, device: str = "cpu", min_time: float = 2.0,
            clock: str = "wall", weight_bytes: int = WEIGHT_BYTES) -> Timing:
    """Batch-1 latency of the module ``build()`` makes, on a random input of ``shape`` (the benchmark
    protocol's eager path: eval mode, ``torch.inference_mode``, warm-up, median of ``min_time`` seconds).

    Calls rotate over enough copies (up to 256) that their weights fill ``weight_bytes``, by default one
    core's private cache (``private_cache_bytes``): inside a network each layer's weights have been pushed out
    of that cache by the rest of the network by the time it runs again, while a mobile network's few
    megabytes of weights stay in the shared last-level cache. Timing one layer over and over from its private
    cache under-predicts a network; rotating through more than the last-level cache over-predicts it (weights
    from memory). On the 2-core EPYC development machine (1 MB L2, 32 MB L3) three CIFAR members' tables
    summed to 0.90-0.95 of the measured network with no rotation, 0.93-0.99 with 1 MB and 1.11-1.31 with
    32 MB. A whole network is timed as it runs in use, one copy (``weight_bytes=0``). ``clock`` is
    ``"wall"`` (the protocol) or ``"cpu"`` (see ``check_clock``).
    """
    return time_fn(_runner(build, shape, device, weight_bytes), min_time, sync=synchronizer(device),
                   clock=CLOCKS[clock])


def measure_side_by_side(builds: dict[str, Callable[[], nn.Module]], shape: Shape | dict[str, Shape],
                         device: str = "cpu", min_time: float = 2.0, clock: str = "wall", rounds: int = 10
                         ) -> dict[str, Timing]:
    """Whole networks timed as ``measure`` does, but in alternating bursts (``time_interleaved``), so a
    change of load on a shared machine falls on all of them alike and their order stays fair. ``shape``
    is one input shape for all, or one per name (networks scaled in resolution)."""
    shapes = shape if isinstance(shape, dict) else dict.fromkeys(builds, shape)
    fns = {name: _runner(build, shapes[name], device, 0) for name, build in builds.items()}
    return time_interleaved(fns, min_time=min_time, rounds=rounds, sync=synchronizer(device),
                            clock=CLOCKS[clock]).timings


@dataclass
class LatencyTable:
    """Measured layer latencies (``entries``: key -> median, p90 ms and run count) on one ``device``."""

    device: dict[str, Any]
    entries: dict[str, dict[str, float]] = field(default_factory=dict)

    def lookup(self, key: str) -> float:
        """Median milliseconds of one entry; a missing one is an error saying how to measure it."""
        try:
            return self.entries[key]["median_ms"]
        except KeyError:
            raise LightnetsError(f"the latency table has no entry {key!r} (measured on {self.device['name']}); "
                                 "measure it with `lightnets latency-table` for this space and input size") from None

    def breakdown(self, arch: Arch, input_size: int, num_classes: int) -> list[tuple[str, float]]:
        """Each layer's table key and median milliseconds."""
        return [(key, self.lookup(key)) for key, _, _ in timed_layers(arch, input_size, num_classes)]

    def predict(self, arch: Arch, input_size: int, num_classes: int) -> float:
        """Predicted batch-1 latency of ``arch`` in milliseconds: the sum of its layers' entries."""
        return sum(ms for _, ms in self.breakdown(arch, input_size, num_classes))

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (atomically: a temporary file renamed into place)."""
        path = Path(path)
        write_text_atomically(path, json.dumps({"format": FORMAT, "device": self.device, "entries": self.entries},
                                               indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LightnetsError(f"cannot read latency table {path}: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LightnetsError(f"{path} is not a lightnets latency table (no \"format\": \"{FORMAT}\")")
        return cls(data["device"], data["entries"])


def build_latency_table(layers: dict[str, tuple[Layer, Shape]], path: str | Path | None = None, *,
                        device: str = "cpu", threads: int | None = 1, min_time: float = 2.0, clock: str = "wall",
                        progress: bool = True, log: Callable[[str], None] = lambda msg: None) -> LatencyTable:
    """A table holding every entry of ``layers``: those already in the file at ``path`` are reused, the
    rest are measured (with ``threads`` intra-op threads) and the file is rewritten as they accumulate."""
    check_clock(clock, device, threads)
    with thread_count(threads):
        here = device_description(device, threads, clock)
        table = LatencyTable(here)
        if path is not None and Path(path).exists():
            table = LatencyTable.load(path)
            if table.device != here:
                raise LightnetsError(f"latency table {path} was measured on {table.device}, not on this {here}; "
                                     "give another table path for this device")
        todo = [k for k in layers if k not in table.entries]
        log(f"latency table: {len(layers) - len(todo)} of {len(layers)} entries already measured, "
            f"{len(todo)} to measure on {here['name']} ({here['threads']} thread(s))")
        for i, key in enumerate(tqdm(todo, desc="latency table", disable=not progress or not todo)):
            layer, shape = layers[key]
            t = measure(layer.build, shape, device, min_time, clock)
            table.entries[key] = {"median_ms": t.median_ms, "p90_ms": t.p90_ms, "runs": t.runs}
            if path is not None and (i % 20 == 19 or i == len(todo) - 1):
                table.save(path)
    return table


def network_layers(archs: Iterable[Arch], input_size: int, num_classes: int) -> dict[str, tuple[Layer, Shape]]:
    """The distinct layers of the given networks (to measure only what they need)."""
    return {key: (layer, shape) for arch in archs for key, layer, shape in timed_layers(arch, input_size, num_classes)}


def table_latency(path: str | Path, input_size: int, num_classes: int, *, device: str = "cpu",
                  threads: int | None = 1, min_time: float = 2.0, clock: str = "wall") -> Callable[[Arch], float]:
    """A predictor of an architecture's latency (ms) from the table file at ``path`` that first measures
    the entries the architecture needs and the table lacks, adding them to the file: a search or a pruning
    run meets layer configurations no table was built for, and each is timed once, when first needed."""
    check_clock(clock, device, threads)

    def latency(arch: Arch) -> float:
        table = build_latency_table(network_layers([arch], input_size, num_classes), path, device=device,
                                    threads=threads, min_time=min_time, clock=clock, progress=False)
        return table.predict(arch, input_size, num_classes)

    return latency


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation: how well a predictor orders networks, which is what a search needs."""
    if len(a) != len(b) or len(a) < 2:
        raise LightnetsError(f"rank correlation needs two lists of equal length >= 2, got {len(a)} and {len(b)}")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else 0.0
