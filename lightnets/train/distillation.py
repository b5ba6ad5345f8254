"""Distillation and specialists as training runs (Hinton, Vinyals and Dean 2015, sections 2 and 5).

Both are ``train`` with a ``RunSetup``: ``distill`` swaps the task for ``DistillationTask``;
``specialists`` starts each specialist from the generalist's weights on a data set enriched in its
group's classes. So they get the same data handling, run folders, checkpoints, resume and reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset, Split, load_data
from ..errors import LightnetsError
from .checkpoint import checkpoint_paths
from .classify import (
    ClassificationTask,
    RunSetup,
    TrainResult,
    load_model,
    pick_device,
    prepare_run_dir,
    read_run_config,
    split_logits,
    train,
)
from .kd import (
    RECIPES,
    DistillationTask,
    TeacherEnsemble,
    check_distill_args,
    check_same_classes,
    combine_with_specialists,
    group_confused_classes,
    specialist_labels,
)
from .loop import Task
from .recipes import Recipe, get_recipe

DUSTBIN = "(other)"  # a specialist's last class: every class outside its group
# Specialists start from the generalist, so they are fine-tuned: the 'fast' recipe at a tenth of its
# learning rate and without warm-up (at its full rate the first steps wipe out the weights they start from).
SPECIALIST_RECIPE = get_recipe("fast", lr=0.02, warmup=0.0)


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
            temperature: float | None = None, alpha: float | None = None, combine: str = "probs",
            distill_recipe: str = "default", resume: str | Path | None = None, **overrides: Any) -> TrainResult:
    """Train ``student`` (a model name) on ``data`` taught by one or more ``teachers`` (checkpoints).

    ``distill_recipe`` picks temperature and alpha from ``lightnets.train.kd.RECIPES`` ('default':
    T=4, alpha=0.9; 'hinton-asr': T=20, alpha=0.5); ``temperature`` and ``alpha`` override it.
    ``combine`` averages the teachers' 'probs' or 'logits'. Everything else is as for ``train``
    (``recipe``, ``out``, ``exist_ok``, ``device``, recipe fields such as ``epochs=5``), and the
    result is ``train``'s. ``resume`` continues a distillation run with the teachers its config names.
    """
    if resume is not None:
        cfg = read_run_config(resume)
        if cfg.get("kind") != "distill":
            raise LightnetsError(f"{resume} is not a distillation run; resume it with "
                                 f"`lightnets {cfg.get('kind', 'train')} --resume {resume}`")
        return train(resume=resume, setup=Distillation.from_record(cfg["distill"]), **overrides)
    if student is None or not teachers or data is None:
        raise LightnetsError("distill needs a student model name, at least one teacher checkpoint and a data source")
    if distill_recipe not in RECIPES:
        raise LightnetsError(f"unknown distillation recipe {distill_recipe!r}; choose from {', '.join(RECIPES)}")
    given = {"temperature": temperature, "alpha": alpha}
    params = RECIPES[distill_recipe] | {k: v for k, v in given.items() if v is not None}
    paths = [teachers] if isinstance(teachers, str | Path) else list(teachers)
    setup = Distillation(paths, params["temperature"], params["alpha"], combine, distill_recipe)
    return train(student, data, recipe, setup=setup, **overrides)


# --- specialists -------------------------------------------------------------------------------


def init_specialist(net: nn.Module, generalist: dict[str, torch.Tensor], group: Sequence[int]) -> None:
    """Load the generalist's weights into ``net``, whose classifier has ``len(group) + 1`` outputs.

    The group's rows of the classifier are the generalist's; the dustbin row is the mean of the
    other classes' rows with log(their number) added to its bias, so its logit starts near the
    log-sum-exp of theirs (a lower bound of it): the specialist begins as the generalist folded.
    """
    fc = net.get_classifier()
    name = next(n for n, m in net.named_modules() if m is fc)
    weight, bias = generalist[f"{name}.weight"], generalist[f"{name}.bias"]
    others = [c for c in range(weight.shape[0]) if c not in set(group)]
    head = {f"{name}.weight": torch.cat([weight[list(group)], weight[others].mean(0, keepdim=True)]),
            f"{name}.bias": torch.cat([bias[list(group)], bias[others].mean(0, keepdim=True) + math.log(len(others))])}
    net.load_state_dict(generalist | head)


def enriched_split(split: Split, group: Sequence[int], num_classes: int, seed: int) -> Split:
    """The specialist's training split: every image of the group's classes and as many (seeded) from the
    others, labels mapped to the group's indices and the dustbin. About half of every shuffled batch
    is then the group's, as in the paper, and the dustbin still sees every other class."""
    inside = torch.isin(split.labels, torch.tensor(list(group)))
    outside = torch.nonzero(~inside).flatten()
    drawn = outside[torch.randperm(len(outside), generator=torch.Generator().manual_seed(seed))[:int(inside.sum())]]
    idx = torch.cat([torch.nonzero(inside).flatten(), drawn]).sort().values
    return Split(split.images[idx], specialist_labels(split.labels[idx], group, num_classes))


class Specialist(RunSetup):
    """Fine-tune the generalist into a specialist for ``group``: its weights, its normalisation, a new head."""

    kind = "specialist"

    def __init__(self, generalist: nn.Module, path: Path, group: Sequence[int]) -> None:
        self.weights = {k: v.detach().cpu() for k, v in generalist.state_dict().items()}
        self.meta, self.path, self.group = generalist.checkpoint_meta, path, list(group)

    def normalisation(self, dataset: Dataset) -> tuple[list[float], list[float]]:
        return self.meta["mean"], self.meta["std"]

    def build(self, net: nn.Module, dataset: Dataset, rec: Recipe, mean: list[float], std: list[float],
              device: torch.device) -> Task:
        init_specialist(net, self.weights, self.group)
        return ClassificationTask(rec.label_smoothing)

    def record(self) -> dict[str, Any]:
        return {"generalist": str(self.path), "group": [self.meta["classes"][c] for c in self.group],
                "class_ids": self.group}


@dataclass
class SpecialistsResult:
    """The groups (class names), each specialist's run, and test top-1 (percent) of the generalist alone
    and combined with the specialists: ``accuracy[model]`` has ``all`` (every test image), ``groups``
    (images of the groups' classes) and one entry per group, keyed by its class names joined by ", "."""

    run_dir: Path
    groups: list[list[str]]
    runs: list[TrainResult]
    accuracy: dict[str, dict[str, float]]
    test_images: int
    group_images: int

    def rows(self) -> list[dict[str, str]]:
        """One row per model: top-1 over all test images, over the groups' classes, and over each group's."""
        return [{"model": name, "top-1 % (all)": f"{acc['all']:.2f}", "top-1 % (group classes)": f"{acc['groups']:.2f}",
                 **{f"top-1 % ({', '.join(g)})": f"{acc[', '.join(g)]:.2f}" for g in self.groups},
                 "test images": str(self.test_images), "of group classes": str(self.group_images)}
                for name, acc in self.accuracy.items()]


def specialists(generalist: str | Path, data: str | Path | Dataset, groups: int = 3,
                recipe: str | Recipe | None = None, *, held_out: int = 5000, top_k: int = 1,
                out: str | Path | None = None, exist_ok: bool = False, device: str | None = None, strict: bool = False,
                progress: bool = True, **overrides: Any) -> SpecialistsResult:
    """Train specialists for the classes a generalist confuses and measure what they add (Hinton et al. 5).

    1. The generalist's probabilities on ``held_out`` images, a subset of the training split drawn
       with its recipe's seed (the test split is kept for step 3; the generalist has seen these
       images, so its confusions are, if anything, understated), are grouped into ``groups``
       clusters of classes (``group_confused_classes``); groups of one class are dropped.
    2. Each group gets a specialist, started from the generalist (``init_specialist``) and trained
       with ``recipe`` (default ``SPECIALIST_RECIPE``) and ``overrides`` (per specialist:
       ``budget_min=3`` is 3 minutes each) on ``enriched_split``, in its own run folder ``OUT/specialist-I``.
    3. On the test split the generalist alone and ``combine_with_specialists`` (specialists active
       for the generalist's ``top_k`` classes) are scored; ``OUT/specialists.json`` holds the groups
       by class name and the results.
    """
    dev = pick_device(device)
    path = checkpoint_paths(generalist)[0].resolve()
    gen = load_model(path, dev)
    meta = gen.checkpoint_meta
    mean, std, seed = meta["mean"], meta["std"], meta["recipe"]["seed"]
    dataset = data if isinstance(data, Dataset) else load_data(data, meta["image_size"], strict=strict, seed=seed)
    check_same_classes([meta["classes"]], dataset.classes)
    num_classes = len(dataset.classes)
    if held_out < num_classes:
        raise LightnetsError(f"held_out must be at least the number of classes ({num_classes}), got {held_out}")
    if top_k < 1:
        raise LightnetsError(f"top_k must be >= 1, got {top_k}")
    idx = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:held_out]
    probs = split_logits(gen, Split(dataset.train.images[idx], dataset.train.labels[idx]), mean, std).softmax(1)
    class_groups = group_confused_classes(probs, groups, seed)
    if not class_groups:
        raise LightnetsError(f"with --groups {groups} every group has a single class; use fewer groups")
    if any(len(g) == num_classes for g in class_groups):
        raise LightnetsError("one group holds every class, so a specialist would have no dustbin; use --groups >= 2")
    run_dir = prepare_run_dir(out, meta["model"], exist_ok, "specialists")
    names = [[dataset.classes[c] for c in g] for g in class_groups]
    runs = []
    for i, group in enumerate(class_groups):
        test = Split(dataset.test.images, specialist_labels(dataset.test.labels, group, num_classes))
        spec_data = Dataset(enriched_split(dataset.train, group, num_classes, seed + i), test,
                            names[i] + [DUSTBIN], f"{dataset.source} (specialist for {', '.join(names[i])})")
        runs.append(train(meta["model"], spec_data, recipe or SPECIALIST_RECIPE, out=run_dir / f"specialist-{i}",
                          exist_ok=exist_ok, image_size=dataset.image_size[0], device=device,
                          model_args=meta.get("model_args"), progress=progress, setup=Specialist(gen, path, group),
                          **overrides))
    labels = dataset.test.labels
    gen_probs = split_logits(gen, dataset.test, mean, std).softmax(1)
    spec_probs = [split_logits(load_model(r.run_dir / "last", dev), dataset.test, mean, std).softmax(1) for r in runs]
    combined = combine_with_specialists(gen_probs, spec_probs, class_groups, top_k=top_k)
    in_groups = torch.isin(labels, torch.tensor([c for g in class_groups for c in g]))

    def top1(p: torch.Tensor, mask: torch.Tensor) -> float:
        return 100 * float((p.argmax(1)[mask] == labels[mask]).double().mean()) if mask.any() else math.nan

    masks = {"all": torch.ones_like(in_groups), "groups": in_groups}
    masks |= {", ".join(n): torch.isin(labels, torch.tensor(g)) for n, g in zip(names, class_groups, strict=True)}
    accuracy = {name: {key: top1(p, mask) for key, mask in masks.items()}
                for name, p in (("generalist", gen_probs), ("generalist + specialists", combined))}
    result = SpecialistsResult(run_dir, names, runs, accuracy, len(labels), int(in_groups.sum()))
    report = {"generalist": str(path), "data": str(dataset.source), "groups": names, "group_ids": class_groups,
              "held_out": {"images": len(idx), "from": "training split", "seed": seed}, "top_k": top_k,
              "specialists": [str(r.run_dir) for r in runs], "test_images": result.test_images,
              "group_test_images": result.group_images, "accuracy": accuracy}
    (run_dir / "specialists.json").write_text(json.dumps(report, indent=2))
    return result
