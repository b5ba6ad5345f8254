"""Proxy accuracy: a short training on a CIFAR-10 subset that ranks candidates without training them fully.

MnasNet trained each candidate for 5 epochs on ImageNet; here, on a CPU, the default budget
(``ProxyBudget``) is 4 epochs over 2,000 training images (200 per class) at 32x32 with AdamW, judged on 500
further images held out of the training split, so the test split never steers the search. Measured on a
2-core AMD EPYC with bf16 instructions (1 thread, bf16, built-in sample): the MobileNetV3-Large-like member took 109
CPU-seconds at width 1.0 and 59 at width 0.5, and both reached about 37% (chance: 10%; SGD at the same
budget reached 26% at width 0.5). So a search of 30 candidates costs about half an hour of CPU. At this
budget the proxy separates poor from reasonable networks more than it ranks good ones (the two widths
above scored within a point of each other); ``--epochs`` and ``--train-images`` buy a sharper ranking.
Every candidate trains with the same seed and data.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..bench import thread_count
from ..bench.probe import choose_speed
from ..data import Dataset, Split, load_data
from ..data.dataset import class_balanced
from ..data.sources import resize_split
from ..errors import LightnetsError
from ..models import create_model
from ..models.mnas_space import Arch
from ..train import RunSetup, load_checkpoint, train
from ..train.run import pick_device


@dataclass(frozen=True)
class ProxyBudget:
    """How each candidate is trained: images per split, epochs, and the overrides of the ``fast`` recipe."""

    train_images: int = 2000
    val_images: int = 500
    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    wd: float = 0.05
    opt: str = "adamw"
    seed: int = 0

    @property
    def steps(self) -> int:
        """Optimizer steps per candidate. Below about 100 the batch-norm running statistics have not
        settled, evaluation collapses to one class and every candidate scores chance."""
        return self.train_images // self.batch_size * self.epochs

    def recipe_overrides(self) -> dict[str, object]:
        """The ``fast`` recipe (one-cycle, label smoothing) with this optimizer, a half-epoch warm-up, no TTA."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "wd": self.wd, "opt": self.opt,
                "warmup": 0.5 if self.epochs > 1 else 0.0, "tta": False, "seed": self.seed}

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def proxy_data(source: str | Path | Dataset, budget: ProxyBudget, image_size: int = 32) -> Dataset:
    """Class-balanced ``budget.train_images`` to train on and ``budget.val_images`` to judge by, both drawn
    (seeded, disjoint) from the source's training split, at ``image_size`` (a given ``Dataset`` of another
    size is resized, as ``load_data`` resizes a source: compound scaling trains at several resolutions)."""
    data = source if isinstance(source, Dataset) else load_data(source, image_size)
    need = budget.train_images + budget.val_images
    if budget.train_images < budget.batch_size or budget.val_images < 1 or need > len(data.train):
        raise LightnetsError(f"the proxy needs train images >= batch size ({budget.batch_size}), val images >= 1 and "
                             f"both together <= the {len(data.train)} training images of {data.source}; got "
                             f"{budget.train_images} + {budget.val_images}")
    train_idx, val_idx = class_balanced(data.train.labels, [budget.train_images, budget.val_images],
                                        torch.Generator().manual_seed(budget.seed))
    resized = data.image_size != (image_size, image_size)

    def subset(idx: torch.Tensor) -> Split:
        split = Split(data.train.images[idx], data.train.labels[idx])
        return resize_split(split, image_size) if resized else split

    return Dataset(subset(train_idx), subset(val_idx), data.classes, f"{data.source} (proxy subset)")


def proxy_speed(data: Dataset, model: str, model_args: dict[str, Any], budget: ProxyBudget, *,
                device: str | None = None, threads: int | None = 1,
                log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """The precision and layout every candidate of one search trains with (so that all are compared alike):
    measured once on ``model`` built with ``model_args`` (the space's reference member, the base network) at the
    proxy's batch and ``threads``, as ``lightnets train`` measures them; returned as recipe overrides."""
    net = create_model(model, num_classes=len(data.classes), **model_args)
    choice = choose_speed(net, (3, *data.image_size), budget.batch_size, pick_device(device), threads=threads,
                          cache_key={"model": model, "model_args": model_args, "num_classes": len(data.classes)})
    log(f"proxy training speed, {choice.line()}")
    return {"amp": choice.amp or "none", "channels_last": choice.channels_last}


def proxy_train(data: Dataset, model: str, model_args: dict[str, Any], budget: ProxyBudget, *,
                setup: RunSetup | None = None, device: str | None = None, threads: int | None = 1,
                speed: dict[str, Any] | None = None) -> tuple[float, dict[str, torch.Tensor]]:
    """Top-1 (0..1) on ``data``'s held-out images and the last weights of the registered ``model`` built
    with ``model_args`` and trained on ``data`` with ``budget`` through ``lightnets.train.train`` (in a
    temporary folder); ``setup`` as for ``train`` (NetAdapt's short fine-tunes start from given weights);
    ``speed`` (from ``proxy_speed``) fixes precision and layout, else each training measures its own."""
    with tempfile.TemporaryDirectory() as tmp, thread_count(threads):
        result = train(model, data, "fast", out=tmp, exist_ok=True, device=device, progress=False,
                       model_args=model_args, setup=setup, threads=threads,
                       **(budget.recipe_overrides() | (speed or {})))
        weights, _ = load_checkpoint(Path(tmp) / "last")
    return result.test.top1 / 100, weights


def proxy_accuracy(data: Dataset, model: str, budget: ProxyBudget, *, device: str | None = None,
                   threads: int | None = 1, speed: dict[str, Any] | None = None) -> Callable[[Arch], float]:
    """A function training one architecture (registered family ``model``) with ``proxy_train``."""
    return lambda arch: proxy_train(data, model, {"arch": arch.to_dict()}, budget, device=device, threads=threads,
                                    speed=speed)[0]
