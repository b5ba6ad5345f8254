"""Knowledge distillation (Hinton, Vinyals and Dean 2015, section 2): soft targets, teacher ensembles, and the
distillation run.

The pieces are plain functions and modules; the training loop uses them as a loss and a teacher
(``DistillationTask``), so distillation needs no loop of its own, and ``distill`` is ``train`` with a
``RunSetup`` that swaps the task: the same data handling, run folders, checkpoints, resume and reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..errors import LightnetsError
from .checkpoint import checkpoint_paths
from .classify import RunSetup, TrainResult, load_model, train
from .loop import Task
from .recipes import Recipe
from .run import Run

# Defaults a user can trust on image classification with a small student: a moderate temperature
# (Hinton et al. found lower temperatures best when the student is much smaller than the teacher)
# and most of the weight on the soft targets. The source's speech setting used T=20, alpha=0.5:
# see DISTILL_RECIPES.
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.9

DISTILL_RECIPES = {
    "hinton-asr": {"temperature": 20.0, "alpha": 0.5},  # the paper's speech experiment, as in the source
    "default": {"temperature": DEFAULT_TEMPERATURE, "alpha": DEFAULT_ALPHA},
}


def check_distill_args(temperature: float, alpha: float) -> None:
    """Reject a temperature or soft-target weight outside its range before any training starts."""
    if not temperature > 0:
        raise LightnetsError(f"temperature must be > 0, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise LightnetsError(f"alpha must be between 0 and 1, got {alpha!r}")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    alpha: float = DEFAULT_ALPHA,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher || student at T) + (1 - alpha) * CE(student, labels)``.

    ``teacher_probs`` are the teacher's probabilities already softened at ``temperature`` (see
    ``TeacherEnsemble``), so an ensemble can average them. The T^2 factor keeps the soft-target
    gradients the same size as the hard-target ones whatever the temperature. ``label_smoothing``
    applies to the hard-target term only, so a recipe's smoothing means the same as in training.
    """
    check_distill_args(temperature, alpha)
    if student_logits.shape != teacher_probs.shape:
        raise LightnetsError(
            f"student logits {tuple(student_logits.shape)} and teacher probabilities {tuple(teacher_probs.shape)} "
            "differ: do teacher and student predict the same classes?"
        )
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    soft = F.kl_div(log_student, teacher_probs.float(), reduction="batchmean") * temperature**2
    if alpha == 1.0:
        return alpha * soft
    hard = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


Norm = tuple[Sequence[float], Sequence[float]]  # per-channel (mean, std) on the 0..1 scale


class TeacherEnsemble(nn.Module):
    """One or more frozen teachers whose temperature-softened predictions are averaged.

    ``combine='probs'`` averages probabilities (the paper's ensemble); ``'logits'`` averages logits
    and softens the mean. Each teacher may expect its own normalisation and input size: ``norms``
    gives the (mean, std) teacher i was trained with and ``input_norm`` the one of the batches
    passed in, so the student's standardisation is undone and the teacher's applied; then
    ``input_sizes`` resizes the batch for that teacher. So a 224-pixel teacher trained on other
    statistics can teach a 32-pixel student on the very same augmented images.
    """

    def __init__(self, teachers: Sequence[nn.Module], combine: str = "probs",
                 input_sizes: Sequence[int | None] | None = None, norms: Sequence[Norm | None] | None = None,
                 input_norm: Norm | None = None) -> None:
        super().__init__()
        if not teachers:
            raise LightnetsError("at least one teacher is needed")
        if combine not in ("probs", "logits"):
            raise LightnetsError(f"combine must be 'probs' or 'logits', got {combine!r}")
        self.teachers = nn.ModuleList(teachers)
        self.combine = combine
        self.input_sizes = list(input_sizes) if input_sizes is not None else [None] * len(teachers)
        if len(self.input_sizes) != len(teachers):
            raise LightnetsError(f"{len(teachers)} teachers but {len(self.input_sizes)} input sizes")
        norms = list(norms) if norms is not None else [None] * len(teachers)
        if len(norms) != len(teachers):
            raise LightnetsError(f"{len(teachers)} teachers but {len(norms)} normalisations")
        if input_norm is None and any(n is not None for n in norms):
            raise LightnetsError("teacher normalisations need input_norm, the (mean, std) of the student's batches")
        # Teacher i sees x * scale[i] + shift[i]: (x * std_in + mean_in - mean_i) / std_i, per channel.
        self.renorm = [n is not None for n in norms]
        scales, shifts = [], []
        for norm in norms:
            if norm is None:
                scales.append(torch.ones(1))
                shifts.append(torch.zeros(1))
                continue
            mean_in, std_in = (torch.tensor(v, dtype=torch.float32) for v in input_norm)
            mean_t, std_t = (torch.tensor(v, dtype=torch.float32) for v in norm)
            scales.append(std_in / std_t)
            shifts.append((mean_in - mean_t) / std_t)
        channels = max(len(v) for v in scales)
        self.register_buffer("scale", torch.stack([v.expand(channels) for v in scales]), persistent=False)
        self.register_buffer("shift", torch.stack([v.expand(channels) for v in shifts]), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TeacherEnsemble:
        """Teachers stay in eval mode (frozen BatchNorm statistics) even inside a training model."""
        return super().train(False)

    def _inputs(self, x: torch.Tensor, i: int) -> torch.Tensor:
        if self.renorm[i]:
            x = x * self.scale[i].view(1, -1, 1, 1) + self.shift[i].view(1, -1, 1, 1)
        size = self.input_sizes[i]
        if size is None or tuple(x.shape[-2:]) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """The ensemble's probabilities at ``temperature``.

        Computed in inference mode, returned as an ordinary tensor: a loss that is backpropagated
        may use it (autograd refuses to save inference tensors).
        """
        with torch.inference_mode():
            logits = [t(self._inputs(x, i)).float() for i, t in enumerate(self.teachers)]
            if self.combine == "logits":
                probs = F.softmax(torch.stack(logits).mean(0) / temperature, dim=1)
            else:
                probs = torch.stack([F.softmax(z / temperature, dim=1) for z in logits]).mean(0)
        return probs.clone()


class DistillationTask:
    """The training loop's task for distillation (see ``train/loop.py``): ``distillation_loss`` on each batch.

    The teachers see the same augmented batch as the student, on the same device, so the soft
    targets match exactly what the student is shown. Reports the student's accuracy as ``acc`` (as
    classification does) and the teachers' as ``teacher_acc``, which exposes a wrong teacher
    normalisation at once.
    """

    def __init__(self, teachers: TeacherEnsemble, temperature: float = DEFAULT_TEMPERATURE,
                 alpha: float = DEFAULT_ALPHA, label_smoothing: float = 0.0) -> None:
        self.teachers, self.temperature, self.alpha = teachers, temperature, alpha
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, labels = batch
        logits = model(images)
        probs = self.teachers(images, self.temperature)
        loss = distillation_loss(logits, probs, labels, self.temperature, self.alpha, self.label_smoothing)
        return loss, {"acc": 100 * (logits.argmax(1) == labels).float().mean(),
                      "teacher_acc": 100 * (probs.argmax(1) == labels).float().mean()}


def check_same_classes(teacher_classes: Sequence[Sequence[str]], student_classes: Sequence[str]) -> None:
    """Teachers and student must predict the same classes in the same order."""
    for i, classes in enumerate(teacher_classes):
        if list(classes) != list(student_classes):
            raise LightnetsError(
                f"teacher {i} predicts classes {list(classes)} but the data has {list(student_classes)}; "
                "distillation needs the same classes in the same order"
            )


class Distillation(RunSetup):
    """Train the student on the teachers' softened predictions (``DistillationTask``) as well as the labels.

    Teachers are checkpoints; each is fed the student's augmented batch re-standardised with its own
    mean and std and resized to its own input size (both from its checkpoint).
    """

    kind = "distill"

    def __init__(self, teachers: Sequence[str | Path], temperature: float, alpha: float, combine: str = "probs",
                 recipe: str = "default") -> None:
        if not teachers:
            raise LightnetsError("give at least one teacher checkpoint")
        check_distill_args(temperature, alpha)
        if combine not in ("probs", "logits"):
            raise LightnetsError(f"combine must be 'probs' or 'logits', got {combine!r}")
        # The weights file, absolute: a resumed run finds its teachers from any working directory.
        self.paths = [checkpoint_paths(t)[0].resolve() for t in teachers]
        self.temperature, self.alpha, self.combine, self.recipe = temperature, alpha, combine, recipe
        self.metas: list[dict[str, Any]] = []

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Distillation:
        """The setup a run folder's config recorded (for resume)."""
        return cls([t["path"] for t in record["teachers"]], record["temperature"], record["alpha"],
                   record["combine"], record.get("recipe", "default"))

    def build(self, net: nn.Module, dataset: Dataset, rec: Recipe, mean: list[float], std: list[float],
              device: torch.device) -> Task:
        memory = torch.channels_last if rec.channels_last else torch.contiguous_format
        teachers = [load_model(p, device).to(memory_format=memory) for p in self.paths]
        self.metas = [t.checkpoint_meta for t in teachers]
        check_same_classes([m["classes"] for m in self.metas], dataset.classes)
        ensemble = TeacherEnsemble(teachers, self.combine, input_sizes=[m["image_size"] for m in self.metas],
                                   norms=[(m["mean"], m["std"]) for m in self.metas], input_norm=(mean, std))
        return DistillationTask(ensemble.to(device), self.temperature, self.alpha, rec.label_smoothing)

    def record(self) -> dict[str, Any]:
        teachers = [{"path": str(p), "model": m["model"], "image_size": m["image_size"], "mean": m["mean"],
                     "std": m["std"], "val_top1": m.get("metrics", {}).get("val_top1")}
                    for p, m in zip(self.paths, self.metas, strict=True)]
        return {"teachers": teachers, "temperature": self.temperature, "alpha": self.alpha, "combine": self.combine,
                "recipe": self.recipe}


def distill(student: str | None = None, teachers: str | Path | Sequence[str | Path] | None = None,
            data: str | Path | Dataset | None = None, recipe: str | Recipe = "fast", *,
            temperature: float | None = None, alpha: float | None = None, combine: str | None = None,
            distill_recipe: str | None = None, resume: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Train ``student`` (a model name) on ``data`` taught by one or more ``teachers`` (checkpoints).

    ``distill_recipe`` picks temperature and alpha from ``DISTILL_RECIPES`` ('default':
    T=4, alpha=0.9; 'hinton-asr': T=20, alpha=0.5); ``temperature`` and ``alpha`` override it.
    ``combine`` averages the teachers' 'probs' (default) or 'logits'. Everything else is as for ``train``
    (``recipe``, ``out``, ``exist_ok``, ``device``, recipe fields such as ``epochs=5``), and the
    result is ``train``'s. ``resume`` continues a distillation run with the teachers, temperature, alpha and
    combination its config names (giving any of them again is refused).
    """
    if resume is not None:
        if any(v is not None for v in (temperature, alpha, combine, distill_recipe)) or teachers:
            raise LightnetsError("a resumed distillation keeps its teachers, temperature, alpha and combine")
        record = Run.resume(resume, Distillation.kind).record
        # The student and data given again are checked against the record by train's resume rule.
        return train(student, data, resume=resume, setup=Distillation.from_record(record["distill"]), **overrides)
    if student is None or not teachers or data is None:
        raise LightnetsError("distill needs a student model name, at least one teacher checkpoint and a data source")
    distill_recipe = distill_recipe or "default"
    if distill_recipe not in DISTILL_RECIPES:
        raise LightnetsError(f"unknown distillation recipe {distill_recipe!r}; "
                             f"choose from {', '.join(DISTILL_RECIPES)}")
    given = {"temperature": temperature, "alpha": alpha}
    params = DISTILL_RECIPES[distill_recipe] | {k: v for k, v in given.items() if v is not None}
    paths = [teachers] if isinstance(teachers, str | Path) else list(teachers)
    setup = Distillation(paths, params["temperature"], params["alpha"], combine or "probs", distill_recipe)
    return train(student, data, recipe, setup=setup, **overrides)
