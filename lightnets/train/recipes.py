"""Recipes: plain dataclasses of hyperparameters, named presets, and the optimizer and LR schedule they build.

Weight decay never touches norms and biases (every parameter with fewer than 2 dimensions).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import LightnetsError
from ..models.base import FROZEN_BF16

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "step", "constant")
AMP = ("auto", None, "bf16", "fp16", FROZEN_BF16)
LAYOUTS = ("auto", True, False)


@dataclass
class Recipe:
    """Everything that decides what a training run learns (the data and model are given separately).

    ``warmup`` is in epochs. ``budget_min`` (minutes of training, evaluation excluded; on a CPU, the
    process's CPU time per thread) ends the run early, the schedule completed over the time instead
    of the epochs. ``wd`` follows PyTorch's
    convention (the gradient gains ``wd * w``; for ``adam`` it is the coupled L2 term, for ``adamw``
    and ``sgd`` the usual decay). ``amp`` is ``"auto"`` (measured on this machine, see ``lightnets.bench.probe``), None
    (fp32), ``"bf16"``, ``"fp16"`` (CUDA) or ``"bf16-frozen"`` (fine-tuning with ``freeze``: fp32, the frozen
    stages in bf16); ``channels_last`` is ``"auto"``, True or False. A run records the
    values it settled on in place of ``"auto"``. ``tta`` averages the logits of each test image and its mirror.
    """

    # One declaration per field: the command line's options are generated from these (lightnets/cli/options.py),
    # ``help`` and ``choices`` included.
    epochs: int = 30
    batch_size: int = field(default=128, metadata={"help": "images per optimizer step, over all processes"})
    opt: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    lr: float = 0.1
    momentum: float = 0.9
    wd: float = field(default=5e-4, metadata={"help": "weight decay (weights only, not norms and biases)"})
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    warmup: float = field(default=0.0, metadata={"help": "linear LR warm-up, in epochs"})
    label_smoothing: float = 0.0
    ema: float = field(default=0.0, metadata={"help": "EMA decay of the weights per step (0: off)"})
    grad_clip: float | None = field(default=None, metadata={"help": "clip the gradient norm to this (none: off)"})
    crop_pad: int = field(default=4, metadata={"help": "random crop padding, pixels"})
    flip: bool = field(default=True, metadata={"help": "random horizontal flips"})
    cutout: int = field(default=0, metadata={"help": "cutout square side, pixels (0: off)"})
    rrc_scale: tuple[float, float] | None = field(default=None, metadata={"help": "random-resized-crop area range "
                                                                          "LOW,HIGH (replaces crop and pad)"})
    amp: str | None = field(default="auto", metadata={"choices": AMP, "help": "autocast precision (auto: the "
                                                      "fastest measured here; none: fp32; "
                                                      f"{FROZEN_BF16}: fp32 but the frozen stages in bf16)"})
    channels_last: bool | str = field(default="auto", metadata={"help": "memory layout (default: the faster "
                                                                "measured here)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    tta: bool = field(default=False, metadata={"help": "evaluate on each image and its mirror"})
    freeze: int = field(default=0, metadata={"help": "fine-tuning: fix the stem and the first N stages (weights and "
                                             "batch-norm statistics)"})
    budget_min: float | None = field(default=None, metadata={"help": "stop after this many minutes of training "
                                                             "(CPU time per thread on a CPU), the LR schedule "
                                                             "completed over the time"})
    seed: int = 0

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with ``overrides`` applied. None values are ignored, so CLI defaults fall through; the
        string ``"none"`` sets an optional field (``amp``, ``grad_clip``, ``budget_min``) to None."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise LightnetsError(f"unknown recipe field(s) {', '.join(unknown)}; fields: {', '.join(sorted(fields))}")
        given = {k: None if v == "none" else v for k, v in overrides.items() if v is not None}
        recipe = dataclasses.replace(self, **given)
        recipe.check()
        return recipe

    def check(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.opt in OPTIMIZERS, f"unknown optimizer {self.opt!r}; choose from {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.wd >= 0, f"weight decay must be >= 0, got {self.wd}"),
            (0 <= self.warmup < self.epochs, f"warmup must be in [0, epochs={self.epochs}), got {self.warmup}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.ema < 1, f"EMA decay must be in [0, 1), got {self.ema}"),
            (self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}"),
            (self.grad_clip is None or 0 < self.grad_clip < math.inf,
             f"gradient clipping must be a finite norm > 0 (or none), got {self.grad_clip}"),
            (self.amp in AMP, f"amp must be one of auto, none, bf16, fp16, {FROZEN_BF16}; got {self.amp!r}"),
            (self.amp != FROZEN_BF16 or self.freeze > 0, f"amp {FROZEN_BF16} computes the frozen stages in bf16: "
             "it needs --freeze N"),
            (self.channels_last in LAYOUTS, f"channels_last must be auto, True or False; got {self.channels_last!r}"),
            (self.cutout >= 0 and self.crop_pad >= 0, "cutout and crop padding must be >= 0"),
            (self.freeze >= 0, f"freeze must be a number of stages >= 0, got {self.freeze}"),
            (self.budget_min is None or self.budget_min > 0, f"time budget must be > 0 minutes, got {self.budget_min}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LightnetsError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The source experiments (Keras, GPU): Adam at its default LR, batch 128, 100 epochs, "standard
# augmentation" (4-pixel shifts and horizontal flips), with and without weight decay. The articles'
# "5e-4 weight decay" is Keras' l2(5e-4) kernel regulariser, which adds 5e-4 * sum(w^2) to the loss,
# that is 1e-3 * w to the gradient: PyTorch's Adam(weight_decay=1e-3).
RECIPES: dict[str, Recipe] = {
    "source": Recipe(epochs=100, batch_size=128, opt="adam", lr=1e-3, wd=0.0, schedule="constant"),
    "source_wd": Recipe(epochs=100, batch_size=128, opt="adam", lr=1e-3, wd=1e-3, schedule="constant"),
    # Accuracy per CPU minute: the recipe of the budgeted CIFAR-10 runs in docs/TRAINING.md.
    "fast": Recipe(epochs=30, batch_size=256, opt="sgd", lr=0.2, momentum=0.9, wd=5e-4, schedule="onecycle",
                   warmup=2, label_smoothing=0.1, tta=True),
    # From pretrained weights (lightnets train --pretrained): a tenth of fast's peak LR, so the first steps do not
    # wreck the features, after a short warm-up in which the fresh classifier settles; light weight decay.
    "finetune": Recipe(epochs=10, batch_size=128, opt="sgd", lr=0.02, momentum=0.9, wd=5e-5, schedule="cosine",
                       warmup=0.5, label_smoothing=0.1, tta=True),
}


def get_recipe(recipe: str | Recipe, **overrides: Any) -> Recipe:
    """A named recipe (or a given one) with ``overrides`` applied and checked."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise LightnetsError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        recipe = RECIPES[recipe]
    return recipe.replace(**overrides)


def make_optimizer(model: nn.Module, recipe: Recipe, betas: tuple[float, float] = (0.9, 0.999)
                   ) -> torch.optim.Optimizer:
    """The recipe's optimizer, with weight decay on weights only (not on norms and biases); ``betas`` are Adam's
    (adversarial training wants a shorter memory than the default)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": recipe.wd},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if recipe.opt == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)
    if recipe.opt == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=betas)
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=betas)


def make_schedule(recipe: Recipe) -> Callable[[float], float]:
    """LR multiplier as a function of training progress in [0, 1): linear warm-up, then the schedule's shape."""
    warm = recipe.warmup / recipe.epochs

    def schedule(p: float) -> float:
        if p < warm:
            return (p + 1e-3) / (warm + 1e-3)
        q = (p - warm) / (1 - warm)
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * q))
        if recipe.schedule == "onecycle":
            return max(0.0, 1 - q)
        if recipe.schedule == "step":
            return 0.1 ** ((q >= 0.5) + (q >= 0.75))
        return 1.0

    return schedule
