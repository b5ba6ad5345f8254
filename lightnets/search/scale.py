"""Compound scaling (EfficientNet, Tan and Le 2019, section 3.3): grid-search the depth, width and resolution
coefficients (alpha, beta, gamma) under ``alpha * beta**2 * gamma**2 ~ 2`` on a small base, then compare the
best with scaling one dimension alone at the same FLOPs: each single dimension is scaled until its MACs
(the repository's counter) match the compound winner's, since the nominal alpha = 2 or beta = gamma = sqrt 2
miss them by up to a third once depths are ceiled per stage and widths rounded.

A network's FLOPs grow about linearly with depth and with the square of width and of resolution, so every
point of the grid (the paper's step 1, ``phi = 1``) is a network of about twice the base's FLOPs. Each is
trained with a proxy budget (``ProxyBudget``: a class-balanced subset of the training split, judged on
further held-out training images) and timed at batch 1 (``measure``). The base is an EfficientNet
(``efficientnet_b0_cifar`` by default) at ``base_width`` and ``base_depth``; a point multiplies them by beta
and alpha (depths are ``ceil(layers * depth_mult)`` per stage, widths rounded to multiples of 8) and the
input side by gamma. The data is decoded once, at the base's side, and each proxy subset resized to the
point's: on 32x32 CIFAR images that is all a larger decode could give; for a source of larger images it
understates what resolution buys (give a larger base ``input_size`` there).

Caveats the results carry: rounding (channels, depths, whole pixels) moves each point's FLOPs off 2x, so
the MACs are logged and shown beside the base's; on 32x32 CIFAR images a higher resolution only upsamples,
adding compute but none of the detail the paper's ImageNet images gain; and at proxy budgets networks of
equal FLOPs score within the noise of one another, so the grid's winner is a weak signal (the log keeps
every point to judge that by).

A scale folder holds ``config.json``, ``grid.jsonl`` (one line per evaluated point: coefficients, their
product, the model arguments and input size, params, MACs, held-out accuracy, latency; the comparison's
single-dimension points too) and ``comparison.md``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..bench import count, count_params, thread_count
from ..data import Dataset, load_data
from ..errors import LightnetsError
from ..models import create_model, model_info
from ..models.efficientnet import compound_coefficients
from ..report import format_markdown
from ..train.run import Run
from .bisection import bisect_threshold
from .latency import check_clock, device_description, measure, measure_side_by_side
from .proxy import ProxyBudget, proxy_data, proxy_speed, proxy_train

LOG, TABLE = "grid.jsonl", "comparison.md"
KIND = "scale"  # a scale folder's kind, in its config.json
PAPER = (1.2, 1.1, 1.15)
Coefficients = tuple[float, float, float]


def coefficient_grid(step: float = 0.05, tolerance: float = 0.1, flops: float = 2.0) -> list[Coefficients]:
    """Every ``(alpha, beta, gamma)`` on a grid of ``step`` from 1 with ``|alpha beta^2 gamma^2 - flops| <=
    tolerance``: the networks that cost ``flops`` times the base, to within the tolerance."""
    if not (0 < step and 0 <= tolerance and flops > 1):
        raise LightnetsError(f"need step > 0, tolerance >= 0 and flops > 1; got {step}, {tolerance}, {flops}")

    def axis(top: float) -> list[float]:
        return [round(1 + i * step, 6) for i in range(int((top - 1) / step + 1e-9) + 1)]

    alphas, others = axis(flops + tolerance), axis(math.sqrt(flops + tolerance))
    return [(a, b, g) for a in alphas for b in others for g in others if abs(a * b * b * g * g - flops) <= tolerance]


def match_macs(axis: int, target_macs: float, macs: Callable[[Coefficients], int], top: float = 4.0,
               tolerance: float = 0.005) -> Coefficients:
    """The coefficients scaling one dimension alone (``axis`` 0: depth, 1: width, 2: resolution) whose network's
    MACs are nearest ``target_macs``, by bisection (MACs grow, in steps, with each coefficient)."""

    def point(value: float) -> Coefficients:
        c = [1.0, 1.0, 1.0]
        c[axis] = round(value, 4)
        return c[0], c[1], c[2]

    lo, hi = bisect_threshold(1.0, top, lambda value: macs(point(value)) < target_macs, tolerance)
    return min(point(lo), point(hi), key=lambda c: abs(macs(c) - target_macs))


def scaled_args(coefficients: Coefficients, base_width: float, base_depth: float, base_size: int
                ) -> tuple[dict[str, float], int]:
    """The model arguments (``width_mult``, ``depth_mult``) and input side of the base scaled by
    ``(alpha, beta, gamma)`` at ``phi = 1``, through EfficientNet's own ``compound_coefficients``."""
    alpha, beta, gamma = coefficients
    width, depth, size = compound_coefficients(1.0, alpha, beta, gamma, base_size)
    return {"width_mult": round(base_width * width, 6), "depth_mult": round(base_depth * depth, 6)}, size


@dataclass
class ScaleResult:
    """The scale folder, every evaluated point (grid order), the best grid point and the comparison rows."""

    run_dir: Path
    points: list[dict[str, Any]]
    best: Coefficients
    comparison: list[dict[str, str]]

    def markdown(self) -> str:
        a, b, g = self.best
        return (f"Coefficients found: alpha {a:g}, beta {b:g}, gamma {g:g} (the paper's: {PAPER[0]}, {PAPER[1]}, "
                f"{PAPER[2]}), best held-out accuracy of {sum(p['grid'] for p in self.points)} grid points.\n\n"
                + format_markdown(self.comparison) + "\n")


def compound_scaling(data: str | Path | Dataset = "sample", *, model: str = "efficientnet_b0_cifar",
                     base_width: float = 0.5, base_depth: float = 0.5, base_size: int | None = None,
                     step: float = 0.05, tolerance: float = 0.1, grid_limit: int | None = None, seed: int = 0,
                     budget: ProxyBudget | None = None,
                     accuracy: Callable[[dict[str, float], int], float] | None = None,
                     out: str | Path | None = None, exist_ok: bool = False, resume: bool = False,
                     device: str = "cpu", threads: int | None = 1, min_time: float = 2.0, clock: str = "wall",
                     log: Callable[[str], None] = lambda msg: None) -> ScaleResult:
    """Grid search of (alpha, beta, gamma) and the comparison at equal FLOPs (see the module); writes the
    scale folder ``out`` (default ``runs/scale/MODEL[-N]``).

    ``grid_limit`` evaluates that many grid points, drawn at random (``seed``) so a small run still spans
    the grid; a resumed run (``resume``) reuses every point logged in ``out``, so raising the limit
    extends a run. ``accuracy(model_args, input_size)`` replaces the proxy training (0..1) if given.
    """
    budget = budget or ProxyBudget()
    check_clock(clock, device, threads)
    size = base_size or model_info(model).input_size
    points = coefficient_grid(step, tolerance)
    if grid_limit is not None:
        if grid_limit < 1:
            raise LightnetsError(f"grid_limit must be >= 1, got {grid_limit}")
        random.Random(seed).shuffle(points)
        points = points[:grid_limit]
    if not points:
        raise LightnetsError(f"no grid point of step {step} is within {tolerance} of alpha beta^2 gamma^2 = 2; "
                             "give a larger tolerance or a finer step")
    source = data.source if isinstance(data, Dataset) else str(data)
    dataset = data if isinstance(data, Dataset) else load_data(data, size)  # first: a bad source makes no folder
    datasets = {size: proxy_data(dataset, budget, size)}
    classes = len(datasets[size].classes)
    create_model(model, num_classes=classes, width_mult=base_width, depth_mult=base_depth)  # a model that scales
    same = {"model": model, "base": {"width_mult": base_width, "depth_mult": base_depth, "input_size": size},
            "data": source, "proxy": budget.to_dict(),
            "device": device_description(device, threads, clock)}
    known: dict[Coefficients, dict[str, Any]] = {}
    settings = {"step": step, "tolerance": tolerance, "grid_limit": grid_limit, "seed": seed, "min_time": min_time,
                "lightnets": __version__}
    if resume:
        run = Run.resume(out, KIND)
        run.require(same)
        known = {(r["alpha"], r["beta"], r["gamma"]): r for r in run.log(LOG).read()}
        run.record.update(settings)
        run.save()
    else:
        run = Run.start(out, model, KIND, same | settings, exist_ok=exist_ok, written=("config.json", LOG, TABLE))
    run_dir = run.dir

    speed: dict[str, Any] = {}

    def train_accuracy(args: dict[str, float], side: int) -> float:
        if side not in datasets:
            datasets[side] = proxy_data(dataset, budget, side)
        if not speed:  # measured once, on the base network, so that every grid point trains alike
            speed.update(proxy_speed(datasets[size], model, {"width_mult": base_width, "depth_mult": base_depth},
                                     budget, device=device, threads=threads, log=log))
        return proxy_train(datasets[side], model, args, budget, device=device, threads=threads, speed=speed)[0]

    score = accuracy or train_accuracy
    counted: dict[Coefficients, int] = {}

    def macs(coefficients: Coefficients) -> int:
        if coefficients not in counted:
            args, side = scaled_args(coefficients, base_width, base_depth, size)
            counted[coefficients] = count(create_model(model, num_classes=classes, **args), side).macs
        return counted[coefficients]

    log(f"scale: {model} at width {base_width}, depth {base_depth}, {size}px; {len(points)} grid points; "
        f"folder {run_dir}")
    if accuracy is None and budget.steps < 100:
        log(f"warning: the proxy trains {budget.steps} steps per network; under about 100, accuracies tend to sit "
            "at chance (more --train-images or --epochs)")

    written: set[Coefficients] = set()
    with (run_dir / LOG).open("w") as f:
        def evaluate(coefficients: Coefficients) -> dict[str, Any]:
            """The point's record, trained and timed unless logged before, written to the log once."""
            if coefficients not in known:
                args, side = scaled_args(coefficients, base_width, base_depth, size)
                start = time.perf_counter()
                acc = score(args, side)
                seconds = time.perf_counter() - start
                with thread_count(threads):
                    timing = measure(lambda: create_model(model, num_classes=classes, **args), (1, 3, side, side),
                                     device, min_time, clock, weight_bytes=0)
                a, b, g = coefficients
                known[coefficients] = {"alpha": a, "beta": b, "gamma": g, "product": round(a * b * b * g * g, 4),
                                       "model_args": args, "input_size": side,
                                       "params": count_params(create_model(model, num_classes=classes, **args)),
                                       "macs": macs(coefficients), "accuracy": acc, "latency_ms": timing.median_ms,
                                       "seconds": round(seconds, 1)}
                log(f"alpha {a:g}, beta {b:g}, gamma {g:g}: {macs(coefficients) / 1e6:.1f}M MACs, held-out top-1 "
                    f"{100 * acc:.1f}%, {timing.median_ms:.2f} ms")
            record = known[coefficients] | {"grid": coefficients in points}
            if coefficients not in written:
                written.add(coefficients)
                f.write(json.dumps(record) + "\n")
                f.flush()
            return record

        grid = [evaluate(c) for c in points]
        best = max(grid, key=lambda r: r["accuracy"])
        found = (best["alpha"], best["beta"], best["gamma"])
        rows = {"base": (1.0, 1.0, 1.0), "compound (best of grid)": found, "compound (paper)": PAPER}
        rows |= {f"{name} only": match_macs(axis, macs(found), macs)
                 for axis, name in enumerate(("depth", "width", "resolution"))}
        compared = {label: evaluate(c) for label, c in rows.items()}
    builds = {label: (lambda r=r: create_model(model, num_classes=classes, **r["model_args"]))
              for label, r in compared.items()}
    shapes = {label: (1, 3, r["input_size"], r["input_size"]) for label, r in compared.items()}
    with thread_count(threads):
        timings = measure_side_by_side(builds, shapes, device, min_time, clock)
    base, base_ms = compared["base"], timings["base"].median_ms
    table = [{"scaling": label, "alpha": f"{r['alpha']:g}", "beta": f"{r['beta']:g}", "gamma": f"{r['gamma']:g}",
              "width": f"{r['model_args']['width_mult']:g}", "depth": f"{r['model_args']['depth_mult']:g}",
              "input": str(r["input_size"]), "params": f"{r['params'] / 1e6:.2f}M", "MACs": f"{r['macs'] / 1e6:.1f}M",
              "MACs x base": f"{r['macs'] / base['macs']:.2f}", "latency ms": f"{timings[label].median_ms:.2f}",
              "latency x base": f"{timings[label].median_ms / base_ms:.2f}",
              "held-out top-1 %": f"{100 * r['accuracy']:.1f}"} for label, r in compared.items()]
    result = ScaleResult(run_dir, grid, (best["alpha"], best["beta"], best["gamma"]), table)
    (run_dir / TABLE).write_text(result.markdown() + f"\nLatency: batch 1, timed side by side, "
                                 f"{device_description(device, threads, clock)['name']}, {threads} thread(s); "
                                 f"accuracy: proxy training ({budget.steps} steps), held-out training images.\n")
    return result
