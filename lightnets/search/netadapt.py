"""NetAdapt (Yang et al. 2018) on networks of the search space: shrink a trained network to a latency target.

Each iteration asks for a latency reduction: ``step`` of the current predicted latency, the fraction decaying
by ``decay`` per iteration, never past the target. Every prunable layer (see ``prune``) makes one proposal:
the fewest of its filters, removed in steps of ``granularity`` channels (smallest L2 norm first), that make
the latency table predict that reduction (where no layer alone can, the reduction is halved until one can: on
a network of many small layers a fixed step would end the run). Each proposal is fine-tuned briefly from the
current weights (``short``, a ``ProxyBudget``: a class-balanced subset of the training split) and judged on
further images held out of the training split, never on the test split; the most accurate proposal is kept,
fine-tuned weights and all. When the prediction reaches the target, a longer fine-tune on the whole training
split follows. The source network was most likely trained on the held-out images as well: that flatters every
proposal alike, and only their order decides anything.

Latencies are predicted by the latency table of the source model's space and input size (``lightnets
latency-table``); entries that narrowed layers need are measured when first asked for and added to the file.

An adapt folder holds ``config.json``; ``iterations.jsonl``, one line per finished iteration (the layer
kept, its channels before and after, predicted latency, held-out accuracy, every proposal);
``current.{safetensors,json}``, the network after the last finished iteration (a checkpoint, which
``resume`` continues from); ``finetune/``, the long fine-tune's run folder; ``adapted.{safetensors,json}``,
the result (a checkpoint for ``lightnets eval`` and ``load_model``); and ``uniform_arch.json``, the source
architecture uniformly width-scaled to the adapted one's predicted latency, to train for comparison
(``lightnets train --model MODEL --arch uniform_arch.json``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .._io import JsonLog
from .._version import __version__
from ..data import Dataset, load_data
from ..errors import LightnetsError
from ..models import create_model
from ..models.mnas_space import Arch
from ..train import FineTune, get_recipe, load_checkpoint, save_checkpoint, train
from ..train.checkpoint import checkpoint_paths, restore_model
from ..train.run import Run
from .bisection import bisect_threshold
from .latency import check_clock, device_description, table_latency
from .proxy import ProxyBudget, proxy_data, proxy_speed, proxy_train
from .prune import forbidden_width, narrower, prunable_widths, prune, removable
from .run import default_table_path
from .space import SPACES, SearchSpace

LOG, CURRENT, ADAPTED, UNIFORM, FOLDER = "iterations.jsonl", "current", "adapted", "uniform_arch.json", "finetune"
KIND = "adapt"  # an adapt folder's kind, in its config.json
# About 200 SGD steps from the current weights, judged on 1,000 held-out training images.
SHORT_FINETUNE = ProxyBudget(train_images=6400, val_images=1000, epochs=1, batch_size=32, lr=0.01, wd=5e-4,
                             opt="sgd")
# The final fine-tune: the ``fast`` recipe from trained weights (as ``lightnets specialists`` fine-tunes).
FINETUNE: dict[str, Any] = {"epochs": 10, "lr": 0.02, "warmup": 0.0}
KEPT_META = ("model", "num_classes", "classes", "image_size", "mean", "std", "recipe", "data")


class StartFrom(FineTune):
    """A fine-tune of a pruned network: its weights, the source checkpoint's normalisation."""

    kind = "adapt"

    def __init__(self, weights: dict[str, torch.Tensor], mean: list[float], std: list[float], source: str) -> None:
        super().__init__(weights, mean, std)
        self.source = source

    def record(self) -> dict[str, Any]:
        return {"source": self.source}


def proposal(arch: Arch, layer: str, budget_ms: float, latency: Callable[[Arch], float], granularity: int = 8
             ) -> tuple[int, float] | None:
    """The widest narrowing of ``layer`` to a multiple of ``granularity`` channels whose predicted latency
    is at most ``budget_ms``, with that latency; None if even the narrowest is over. Latency grows with
    width, so the widths are bisected: a few table entries per layer, not one per width. A residual block's
    narrowest is 0 channels, its removal (``prune.removable``)."""
    width, forbidden = prunable_widths(arch)[layer], forbidden_width(arch, layer)
    widths = [0] * removable(arch, layer) + [c for c in range(granularity, width, granularity) if c != forbidden]
    if not widths:
        return None
    scored: dict[int, float] = {}

    def fits(i: int) -> bool:
        scored[i] = latency(narrower(arch, layer, widths[i]))
        return scored[i] <= budget_ms

    if not fits(0):
        return None
    lo, hi = 0, len(widths)  # widths[lo] fits; widths[hi] (or the current width) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return widths[lo], scored[lo]


def proposals(arch: Arch, current_ms: float, reduction_ms: float, latency: Callable[[Arch], float],
              granularity: int = 8) -> dict[str, tuple[int, float]]:
    """Each prunable layer's ``proposal`` for saving ``reduction_ms`` of ``current_ms``, where it has one."""
    found = {layer: proposal(arch, layer, current_ms - reduction_ms, latency, granularity)
             for layer in prunable_widths(arch)}
    return {layer: p for layer, p in found.items() if p is not None}


def equal_latency_width(arch: Arch, target_ms: float, latency: Callable[[Arch], float], tolerance: float = 0.01
                        ) -> tuple[float, float]:
    """The widest width multiplier of ``arch`` (to ``tolerance``, by bisection below its own) whose predicted
    latency is at most ``target_ms``, and that latency: the uniformly scaled network NetAdapt's result is
    compared with. Explicit widths (``StageArch.mids``, ``final_chs``) do not scale."""
    def scaled(width: float) -> float:
        return latency(replace(arch, width_mult=width))

    width, _ = bisect_threshold(0.0, arch.width_mult, lambda w: scaled(w) <= target_ms, tolerance)
    if width == 0.0:
        raise LightnetsError(f"no width multiplier above {tolerance} predicts {target_ms:.3f} ms or less")
    return width, scaled(width)


@dataclass
class AdaptResult:
    """The adapt folder, the logged iterations, predicted latencies (source, result, target), the result's
    checkpoint with its test top-1 (percent; None without the long fine-tune) and the uniform comparison."""

    run_dir: Path
    iterations: list[dict[str, Any]]
    source_ms: float
    latency_ms: float
    target_ms: float
    checkpoint: Path
    test_top1: float | None
    uniform: dict[str, Any] | None

    def rows(self) -> list[dict[str, str]]:
        return [{"iteration": str(r["iteration"]), "layer": r["layer"], "channels": "{} -> {}".format(*r["channels"]),
                 "proposals": str(len(r["proposals"])), "latency ms": f"{r['latency_ms']:.3f}",
                 "held-out top-1 %": f"{100 * r['accuracy']:.1f}"} for r in self.iterations]


def _space_of(model: str) -> SearchSpace:
    return next(s for s in SPACES.values() if s.model == model)


def adapt(checkpoint: str | Path, target_ms: float, data: str | Path | Dataset | None = None, *,
          out: str | Path | None = None, resume: bool = False, step: float = 0.04, decay: float = 0.96,
          granularity: int = 8, short: ProxyBudget | None = None, finetune: dict[str, Any] | None = None,
          compare: bool = True, table: str | Path | None = None,
          input_size: int | None = None, device: str = "cpu", threads: int | None = 1, min_time: float = 2.0,
          clock: str = "wall", progress: bool = True, log: Callable[[str], None] = lambda msg: None) -> AdaptResult:
    """Shrink the ``mnas_space`` network in ``checkpoint`` until its predicted latency is at most ``target_ms``
    (NetAdapt, see the module); writes the adapt folder ``out`` (default ``runs/adapt/MODEL[-N]``).

    ``data`` defaults to the checkpoint's data source. ``short`` is each proposal's fine-tune (default
    ``SHORT_FINETUNE``); ``finetune`` overrides fields of the final fine-tune's recipe (``FINETUNE``;
    ``{"epochs": 0}`` skips it). ``compare`` also writes ``uniform_arch.json``. The latency
    options are those of ``search``; ``resume`` continues the run in ``out`` from its last finished iteration.
    """
    short, finetune = short or SHORT_FINETUNE, FINETUNE | (finetune or {})
    if not (0 < step < 1 and 0 < decay <= 1 and granularity >= 1 and target_ms > 0):
        raise LightnetsError(f"need 0 < step < 1, 0 < decay <= 1, granularity >= 1 and a target > 0 ms; got step "
                             f"{step}, decay {decay}, granularity {granularity}, target {target_ms}")
    if finetune["epochs"]:
        get_recipe("fast", **finetune)  # a bad override fails now, not after the iterations
    check_clock(clock, device, threads)
    path = checkpoint_paths(checkpoint)[0].resolve()
    weights, meta = load_checkpoint(path)
    name, models = meta.get("model"), sorted({s.model for s in SPACES.values()})
    if name not in models:
        raise LightnetsError(f"{checkpoint} holds a {name!r} model; NetAdapt prunes networks of the search space "
                             f"({', '.join(models)}): train one with `lightnets train --model mnas_space_cifar "
                             "[--arch FILE.json]`")
    model = restore_model(create_model(name, num_classes=meta["num_classes"], **meta.get("model_args", {})), weights,
                          meta, path, name)
    source_arch, size = model.arch, input_size or meta["image_size"]
    table_path = Path(table) if table else default_table_path(_space_of(name), size, device, threads, clock)
    latency = table_latency(table_path, size, meta["num_classes"], device=device, threads=threads,
                            min_time=min_time, clock=clock)
    source_ms = latency(source_arch)
    if target_ms >= source_ms:
        raise LightnetsError(f"the target {target_ms} ms is not below the source network's predicted latency "
                             f"{source_ms:.3f} ms ({table_path}); give a smaller --target-latency")
    data = data if data is not None else meta["data"]
    dataset = data if isinstance(data, Dataset) else load_data(data, meta["image_size"])
    if list(dataset.classes) != list(meta["classes"]):
        raise LightnetsError(f"{dataset.source} has classes {dataset.classes}, the checkpoint {meta['classes']}; "
                             "fine-tuning needs the same classes in the same order")
    tune_data = proxy_data(dataset, short, meta["image_size"])
    same = {"checkpoint": str(path), "target_ms": target_ms, "data": str(dataset.source), "input_size": size,
            "step": step, "decay": decay, "granularity": granularity, "short": short.to_dict(),
            "finetune": finetune, "table": str(table_path)}
    base_meta = {k: meta[k] for k in KEPT_META if k in meta}
    records: list[dict[str, Any]] = []
    if resume:
        run = Run.resume(out, KIND)
        run.require(same)
        run_dir, done = run.dir, 0
        if (run_dir / f"{CURRENT}.json").exists():
            weights, current = load_checkpoint(run_dir / CURRENT)
            model = restore_model(create_model(name, num_classes=meta["num_classes"], **current["model_args"]),
                                  weights, current, run_dir / CURRENT, name)
            done = current["adapt"]["iteration"]
        log_file = run.log(LOG)
        records = log_file.keep(r for r in log_file.read() if r["iteration"] <= done)  # later lines: a crash
        log(f"adapt: resuming {run_dir} after iteration {len(records)}")
    else:
        config = same | {"model": name, "source_ms": source_ms, "device": device_description(device, threads, clock),
                         "min_time": min_time, "lightnets": __version__}
        run_dir = Run.start(out, name, KIND, config).dir
    log(f"adapt: {name} from {source_ms:.3f} ms to {target_ms} ms (predicted, {table_path}); folder {run_dir}")

    current_ms = latency(model.arch)
    speed = proxy_speed(tune_data, name, {"arch": model.arch.to_dict()}, short, device=device, threads=threads,
                        log=log) if current_ms > target_ms else None
    while current_ms > target_ms:
        iteration, start = len(records) + 1, time.perf_counter()
        reduction = min(current_ms * step * decay ** (iteration - 1), current_ms - target_ms)
        found = proposals(model.arch, current_ms, reduction, latency, granularity)
        while not found and reduction > 1e-3 * current_ms:
            reduction /= 2
            log(f"iteration {iteration}: no layer alone saves the step; asking for {reduction:.4f} ms")
            found = proposals(model.arch, current_ms, reduction, latency, granularity)
        if not found:
            raise LightnetsError(f"iteration {iteration}: no layer can be narrowed further (in steps of {granularity} "
                                 f"channels) to save time at {current_ms:.3f} ms; give a higher target")
        best: tuple[tuple[float, float], dict[str, Any], dict[str, torch.Tensor]] | None = None
        tried = []
        for layer, (channels, ms) in found.items():
            pruned = prune(model, layer, channels)
            setup = StartFrom(pruned.state_dict(), meta["mean"], meta["std"], str(path))
            accuracy, tuned = proxy_train(tune_data, name, {"arch": pruned.arch.to_dict()}, short, setup=setup,
                                          device=device, threads=threads, speed=speed)
            width = prunable_widths(model.arch)[layer]
            record = {"layer": layer, "channels": [width, channels], "latency_ms": ms, "accuracy": accuracy}
            tried.append(record)
            change = f"{width} -> {channels} channels" if channels else "removed"
            log(f"iteration {iteration}: {layer} {change}, {ms:.3f} ms, "
                f"held-out top-1 {100 * accuracy:.1f}%")
            if best is None or (accuracy, -ms) > best[0]:
                best = ((accuracy, -ms), record | {"arch": pruned.arch.to_dict()}, tuned)
        _, kept, tuned = best
        model = create_model(name, num_classes=meta["num_classes"], arch=kept["arch"])
        model.load_state_dict(tuned)
        current_ms = kept["latency_ms"]
        records.append({"iteration": iteration} | kept | {"target_reduction_ms": reduction, "proposals": tried,
                                                           "seconds": round(time.perf_counter() - start, 1)})
        JsonLog(run_dir / LOG).append(records[-1])  # the line first: a crash before the checkpoint redoes it
        save_checkpoint(run_dir / CURRENT, model.state_dict(),
                        base_meta | {"model_args": {"arch": kept["arch"]},
                                     "adapt": {"iteration": iteration, "latency_ms": current_ms}})
        log(f"iteration {iteration}: kept {kept['layer']} at {kept['channels'][1]} channels, {current_ms:.3f} ms")

    summary = {"source": str(path), "source_ms": source_ms, "latency_ms": current_ms, "target_ms": target_ms,
               "iterations": len(records), "table": str(table_path)}
    if not (run_dir / f"{ADAPTED}.json").exists():
        test_top1 = None
        if finetune["epochs"]:
            folder, setup = run_dir / FOLDER, StartFrom(model.state_dict(), meta["mean"], meta["std"], str(path))
            result = train(name, dataset, "fast", out=folder, exist_ok=True, device=device, progress=progress,
                           resume=folder if (folder / "state.safetensors").exists() else None, threads=threads,
                           model_args={"arch": model.arch.to_dict()}, setup=setup, **finetune)
            model.load_state_dict(load_checkpoint(folder / "last")[0])
            test_top1 = result.test.top1
        save_checkpoint(run_dir / ADAPTED, model.state_dict(),
                        base_meta | {"model_args": {"arch": model.arch.to_dict()},
                                     "adapt": summary | {"test_top1": test_top1}})
    test_top1 = load_checkpoint(run_dir / ADAPTED)[1]["adapt"]["test_top1"]
    uniform = None
    if compare and not (run_dir / UNIFORM).exists():
        try:
            width, ms = equal_latency_width(source_arch, current_ms, latency)
        except LightnetsError as err:  # a fixed cost per layer that no width removes: the result stands
            log(f"adapt: no uniformly width-scaled source network for comparison: {err}")
        else:
            uniform = {"model": name, "model_args": {"arch": replace(source_arch, width_mult=width).to_dict()},
                       "width_mult": width, "latency_ms": ms, "adapted_latency_ms": current_ms}
            (run_dir / UNIFORM).write_text(json.dumps(uniform, indent=2))
    if compare and (run_dir / UNIFORM).exists():
        uniform = json.loads((run_dir / UNIFORM).read_text())
    return AdaptResult(run_dir, records, source_ms, current_ms, target_ms, run_dir / f"{ADAPTED}.safetensors",
                       test_top1, uniform)
