"""Knowledge distillation (Hinton, Vinyals and Dean 2015): soft targets, teacher ensembles, specialists.

The pieces here are plain functions and modules; the training loop uses them as a loss and a
teacher (``DistillationTask``), so distillation needs no loop of its own. The runs built on them
(``lightnets.distill``, ``lightnets.specialists``) are in ``lightnets.train.distillation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LightnetsError

# Defaults a user can trust on image classification with a small student: a moderate temperature
# (Hinton et al. found lower temperatures best when the student is much smaller than the teacher)
# and most of the weight on the soft targets. The source's speech setting used T=20, alpha=0.5:
# see RECIPES in this module.
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.9

RECIPES = {
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
        check_distill_args(temperature, alpha)
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


# --- specialists -------------------------------------------------------------------------------

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
