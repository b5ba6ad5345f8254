"""``lightnets search`` and ``lightnets latency-table`` as library calls: the pieces put together, files written.

A search folder holds ``config.json`` (every setting), ``candidates.jsonl`` (one line per evaluated
candidate: accuracy, predicted latency, reward, parent, architecture), ``pareto.png`` and ``best_arch.json``,
a config that ``create_model`` and ``lightnets.train.train`` accept as it is::

    cfg = json.loads(Path("runs/search/mobilenetv3_cifar/best_arch.json").read_text())
    model = create_model(cfg["model"], **cfg["model_args"])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import JsonLog
from .._plot import headless_pyplot
from .._version import __version__
from ..bench.benchmark import pareto_front
from ..data import Dataset, cache_dir
from ..models.mnas_space import Arch
from ..train.run import Run
from .evolution import Candidate, arch_key, check_settings, regularized_evolution
from .latency import (
    LatencyTable,
    build_latency_table,
    check_clock,
    device_description,
    space_layers,
    table_latency,
)
from .proxy import ProxyBudget, proxy_accuracy, proxy_data, proxy_speed
from .space import SearchSpace, get_space

LOG, BEST, PLOT = "candidates.jsonl", "best_arch.json", "pareto.png"
KIND = "search"  # a search folder's kind, in its config.json


def default_table_path(space: SearchSpace, input_size: int, device: str = "cpu", threads: int | None = 1,
                       clock: str = "wall") -> Path:
    """Where a space's table for this device lives unless told otherwise: in the lightnets cache, named
    by space, input size and a digest of the device description, so another machine never reuses it."""
    digest = hashlib.sha256(json.dumps(device_description(device, threads, clock), sort_keys=True).encode())
    return cache_dir() / "latency" / f"{space.name}-{input_size}px-{digest.hexdigest()[:10]}.json"


def latency_table(space: str | SearchSpace, input_size: int | None = None, path: str | Path | None = None, *,
                  device: str = "cpu", threads: int | None = 1, min_time: float = 2.0, clock: str = "wall",
                  progress: bool = True, log: Callable[[str], None] = lambda msg: None) -> tuple[LatencyTable, Path]:
    """Measure (or complete, reusing the file) the table of every distinct layer of ``space``."""
    space = get_space(space) if isinstance(space, str) else space
    size = input_size or space.input_size
    path = Path(path) if path else default_table_path(space, size, device, threads, clock)
    table = build_latency_table(space_layers(space, size), path, device=device, threads=threads, min_time=min_time,
                                clock=clock, progress=progress, log=log)
    return table, path


@dataclass
class SearchResult:
    run_dir: Path
    candidates: list[Candidate]
    target_ms: float

    @property
    def best(self) -> Candidate:
        return max(self.candidates, key=lambda c: c.reward)

    def rows(self, top: int = 10) -> list[dict[str, str]]:
        """The ``top`` candidates by reward, for the command's results table."""
        ranked = sorted(self.candidates, key=lambda c: -c.reward)[:top]
        return [{"#": str(c.index), "width": f"{c.arch.width_mult:g}",
                 "depths": "-".join(str(s.layers) for s in c.arch.stages),
                 "kernels": "-".join(str(s.kernel) for s in c.arch.stages),
                 "expand": "-".join(f"{s.expand:g}" for s in c.arch.stages),
                 "se": "".join("y" if s.se else "n" for s in c.arch.stages),
                 "latency ms": f"{c.latency_ms:.2f}", "accuracy %": f"{100 * c.accuracy:.1f}",
                 "reward": f"{c.reward:.4f}"} for c in ranked]


def read_log(path: Path) -> dict[str, float]:
    """``arch_key`` -> accuracy of every candidate in a search log (what a resumed search reuses)."""
    return {arch_key(Arch.from_dict(r["arch"])): r["accuracy"] for r in JsonLog(path).read()}


def plot_pareto(candidates: list[Candidate], path: str | Path, target_ms: float, title: str = "") -> Path | None:
    """Accuracy against predicted latency for every candidate (coloured by search order), the Pareto front,
    the target latency and the best reward; None without matplotlib."""
    plt = headless_pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = ax.scatter([c.latency_ms for c in candidates], [100 * c.accuracy for c in candidates],
                        c=[c.index for c in candidates], cmap="viridis", s=18)
    fig.colorbar(points, ax=ax, label="candidate (search order)")
    front = pareto_front([(c.latency_ms, 100 * c.accuracy) for c in candidates])
    ax.plot(*zip(*front, strict=True), "k--", lw=1, drawstyle="steps-post", label="Pareto front")
    best = max(candidates, key=lambda c: c.reward)
    ax.scatter([best.latency_ms], [100 * best.accuracy], marker="*", s=200, c="red", label="best reward")
    ax.axvline(target_ms, color="grey", lw=1, ls=":", label=f"target {target_ms:.2f} ms")
    ax.set_xlabel("predicted batch-1 latency, ms (latency table)")
    ax.set_ylabel("proxy top-1 accuracy, %")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def search(space: str | SearchSpace = "mobilenetv3_cifar", data: str | Path | Dataset = "sample", *,
           target_ms: float | None = None, w: float = -0.07, w_over: float | None = None, population: int = 10,
           sample: int = 3, cycles: int = 20, seed: int = 0, budget: ProxyBudget | None = None,
           accuracy: Callable[[Arch], float] | None = None, table: str | Path | None = None,
           input_size: int | None = None, device: str = "cpu", threads: int | None = 1, min_time: float = 2.0,
           clock: str = "wall", out: str | Path | None = None, exist_ok: bool = False, resume: bool = False,
           log: Callable[[str], None] = lambda msg: None) -> SearchResult:
    """Regularized evolution over ``space`` with MnasNet's reward; writes the search folder (see the module).

    Latency: predicted from the table at ``table`` (default: ``default_table_path``); entries a candidate
    needs and the table lacks are measured when first needed (``device``, ``threads``, ``min_time``,
    ``clock``) and added to the file. Accuracy: ``accuracy(arch)`` if given (0..1), else the proxy training
    of ``budget`` on ``data``. ``target_ms`` defaults to the predicted latency of the space's
    MobileNetV3-Large-like member. ``resume`` reuses the accuracies already logged in ``out``.
    """
    space = get_space(space) if isinstance(space, str) else space
    budget = budget or ProxyBudget()
    size = input_size or space.input_size
    check_clock(clock, device, threads)
    check_settings(population, sample, cycles)
    source = data.source if isinstance(data, Dataset) else str(data)
    same = {"space": space.name, "input_size": size, "data": source, "proxy": budget.to_dict()}
    run = Run.resume(out, KIND) if resume else None
    known: dict[str, float] = {}
    if run is not None:  # only accuracies from a folder whose space, data and proxy match
        run.require(same)
        known = read_log(run.dir / LOG)
    proxy = accuracy is None
    if proxy:  # the data first, so a bad source leaves no folder behind
        subset = proxy_data(data, budget, size)
        speed = proxy_speed(subset, space.model, {"arch": space.reference().to_dict()}, budget, device=device,
                            threads=threads, log=log)
        accuracy = proxy_accuracy(subset, space.model, budget, device=device, threads=threads, speed=speed)
    if run is None:
        run = Run.start(out, space.name, KIND, same, exist_ok=exist_ok, written=("config.json", LOG, BEST, PLOT))
    run_dir = run.dir
    table_path = Path(table) if table else default_table_path(space, size, device, threads, clock)
    latency = table_latency(table_path, size, space.num_classes, device=device, threads=threads, min_time=min_time,
                            clock=clock)
    target = target_ms or latency(space.reference())
    config = same | {"model": space.model, "target_ms": target, "w": w, "w_over": w_over, "population": population,
                     "sample": sample, "cycles": cycles, "seed": seed, "table": str(table_path),
                     "device": device_description(device, threads, clock), "min_time": min_time,
                     "lightnets": __version__}
    run.record.update(config)
    run.save()
    log(f"search: {space.name} ({space.size:,} members), target {target:.2f} ms, w {w}, "
        f"{population} random + {cycles} mutated candidates; folder {run_dir}")
    if proxy and budget.steps < 100:
        log(f"warning: the proxy trains {budget.steps} steps per candidate; under about 100, accuracies tend to "
            "sit at chance (more --train-images or --epochs)")
    with (run_dir / LOG).open("w") as f:
        def record(c: Candidate) -> None:
            f.write(json.dumps(c.record()) + "\n")
            f.flush()
            log(f"candidate {c.index}: accuracy {100 * c.accuracy:.1f}%, latency {c.latency_ms:.2f} ms, "
                f"reward {c.reward:.4f}" + (f" (mutated from {c.parent})" if c.parent is not None else ""))

        candidates = regularized_evolution(space, accuracy, latency, target_ms=target, w=w, w_over=w_over,
                                           population=population, sample=sample, cycles=cycles, seed=seed,
                                           known=known, on_candidate=record)
    result = SearchResult(run_dir, candidates, target)
    best = result.best
    best_config: dict[str, Any] = {"model": space.model, "model_args": {"arch": best.arch.to_dict()},
                                   "accuracy": best.accuracy, "latency_ms": best.latency_ms, "reward": best.reward,
                                   "candidate": best.index, "target_ms": target, "w": w, "space": space.name}
    (run_dir / BEST).write_text(json.dumps(best_config, indent=2))
    plot_pareto(candidates, run_dir / PLOT, target, f"{space.name}: {len(candidates)} candidates")
    return result
