"""Specialists for the classes a generalist confuses (Hinton, Vinyals and Dean 2015, section 5).

The generalist's predicted probabilities on held-out images are clustered into groups of classes it confuses;
each group gets a specialist (its classes plus a dustbin class) started from the generalist and trained by
``train`` with a ``RunSetup``, and the generalist alone is scored against the paper's combination.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, Split, load_data
from ..errors import LightnetsError
from .checkpoint import checkpoint_paths, load_model
from .classify import FineTune, TrainResult, split_logits, train
from .distill import check_same_classes
from .recipes import Recipe, get_recipe
from .run import pick_device, prepare_run_dir

DUSTBIN = "(other)"  # a specialist's last class: every class outside its group
# Specialists start from the generalist, so they are fine-tuned: the 'fast' recipe at a tenth of its
# learning rate and without warm-up (at its full rate the first steps wipe out the weights they start from).
SPECIALIST_RECIPE = get_recipe("fast", lr=0.02, warmup=0.0)


def prediction_covariance(probs: torch.Tensor) -> torch.Tensor:
    """The C x C covariance of the generalist's predicted class probabilities over held-out images.

    Classes that the generalist confuses rise and fall together, so their columns are alike.
    """
    centred = probs.double() - probs.double().mean(0, keepdim=True)
    return (centred.T @ centred / max(1, probs.shape[0] - 1)).float()


def kmeans(points: torch.Tensor, k: int, seed: int = 0, iters: int = 100, restarts: int = 50) -> torch.Tensor:
    """Cluster the rows of ``points`` into ``k`` groups; returns labels.

    The best (least within-cluster squared distance) of ``restarts`` runs of k-means++ seeding and
    Lloyd iterations: one run alone often settles in a poor local optimum.
    """
    n = points.shape[0]
    if not 1 <= k <= n:
        raise LightnetsError(f"number of groups must be between 1 and {n}, got {k}")
    gen = torch.Generator().manual_seed(seed)
    runs = [_kmeans_once(points, k, gen, iters) for _ in range(max(1, restarts))]
    return min(runs, key=lambda r: r[1])[0]


def _kmeans_once(points: torch.Tensor, k: int, gen: torch.Generator, iters: int) -> tuple[torch.Tensor, float]:
    """One k-means++ seeding and Lloyd run: the labels and their within-cluster sum of squared distances."""
    n = points.shape[0]
    centres = [points[torch.randint(n, (1,), generator=gen).item()]]
    for _ in range(1, k):
        dist = torch.cdist(points, torch.stack(centres)).min(1).values.square()
        weights = dist if dist.sum() > 0 else torch.ones(n)
        centres.append(points[torch.multinomial(weights, 1, generator=gen).item()])
    centre_t = torch.stack(centres)
    labels = torch.cdist(points, centre_t).argmin(1)
    for _ in range(iters):
        counts = torch.bincount(labels, minlength=k)[:, None]
        sums = torch.zeros_like(centre_t).index_add_(0, labels, points)
        centre_t = torch.where(counts > 0, sums / counts.clamp_min(1), centre_t)  # an empty cluster keeps its centre
        new = torch.cdist(points, centre_t).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels, float((points - centre_t[labels]).square().sum())


def group_confused_classes(probs: torch.Tensor, num_groups: int, seed: int = 0) -> list[list[int]]:
    """Groups of classes the generalist confuses: k-means on the columns of its prediction covariance,
    scaled to correlations.

    Raw covariance columns differ mostly by each class's own variance (how confidently it is
    predicted), which hides who is confused with whom: on a CIFAR-10 generalist (2,000 training
    images) they gave one group of six to nine classes; correlations give {cat, dog}, {automobile,
    truck}, {airplane, ship}, {deer, horse} and the like. Returns the groups with at least two
    classes (a specialist for one class would learn nothing the generalist does not know), each
    sorted, largest first.
    """
    cov = prediction_covariance(probs)
    std = cov.diag().clamp_min(1e-12).sqrt()
    labels = kmeans(cov / std[:, None] / std[None, :], num_groups, seed)
    groups = [sorted(torch.nonzero(labels == j).flatten().tolist()) for j in range(num_groups)]
    return sorted((g for g in groups if len(g) >= 2), key=lambda g: (-len(g), g))


def specialist_labels(labels: torch.Tensor, group: Sequence[int], num_classes: int) -> torch.Tensor:
    """Map full-problem labels to a specialist's: index within ``group``, or the dustbin ``len(group)``."""
    lookup = torch.full((num_classes,), len(group), dtype=torch.long, device=labels.device)
    lookup[list(group)] = torch.arange(len(group), device=labels.device)
    return lookup[labels]


def combine_with_specialists(
    generalist_probs: torch.Tensor,
    specialist_probs: Sequence[torch.Tensor],
    groups: Sequence[Sequence[int]],
    top_k: int = 1,
    steps: int = 200,
    lr: float = 0.1,
) -> torch.Tensor:
    """Full-class distributions q that agree with the generalist and the relevant specialists (Hinton et al. 5.3).

    For each image, the specialists whose group holds one of the generalist's ``top_k`` classes are
    active; q minimises ``KL(p_g, q) + sum_active KL(p_m, q)``, where a specialist's distribution over
    its classes plus a dustbin is compared with q folded the same way (the dustbin takes the mass of
    all other classes). Solved by gradient descent on the logits of q, starting from the generalist.
    """
    num_classes = generalist_probs.shape[1]
    eps = 1e-8
    top = generalist_probs.topk(min(top_k, num_classes), dim=1).indices
    folds, actives = [], []
    for group in groups:
        fold = torch.zeros(num_classes, len(group) + 1, device=generalist_probs.device)
        fold[:, -1] = 1.0
        for j, c in enumerate(group):
            fold[c, -1] = 0.0
            fold[c, j] = 1.0
        folds.append(fold)
        in_group = torch.zeros(num_classes, dtype=torch.bool, device=generalist_probs.device)
        in_group[list(group)] = True
        actives.append(in_group[top].any(1).float())
    logits = generalist_probs.clamp_min(eps).log().clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            q = F.softmax(logits, dim=1)
            loss = (generalist_probs * (generalist_probs.clamp_min(eps).log() - q.clamp_min(eps).log())).sum(1)
            for probs, fold, active in zip(specialist_probs, folds, actives, strict=True):
                q_folded = q @ fold
                kl = (probs * (probs.clamp_min(eps).log() - q_folded.clamp_min(eps).log())).sum(1)
                loss = loss + active * kl
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
    return F.softmax(logits.detach(), dim=1)


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


class Specialist(FineTune):
    """Fine-tune the generalist into a specialist for ``group``: its weights, its normalisation, a new head."""

    kind = "specialist"

    def __init__(self, generalist: nn.Module, path: Path, group: Sequence[int]) -> None:
        meta = generalist.checkpoint_meta
        super().__init__(generalist.state_dict(), meta["mean"], meta["std"])
        self.meta, self.path, self.group = meta, path, list(group)

    def start(self, net: nn.Module) -> None:
        init_specialist(net, self.weights, self.group)

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
    run_dir = prepare_run_dir(out, meta["model"], exist_ok, "specialists", written=("specialists.json",))
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
