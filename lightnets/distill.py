"""Knowledge distillation (Hinton, Vinyals and Dean 2015): soft targets, teacher ensembles, specialists.

The pieces here are plain functions and modules; the training loop uses them as a loss and a
teacher, so distillation needs no loop of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LightnetsError

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
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher || student at T) + (1 - alpha) * CE(student, labels)``.

    ``teacher_probs`` are the teacher's probabilities already softened at ``temperature`` (see
    ``soft_targets``), so an ensemble can average them. The T^2 factor keeps the soft-target
    gradients the same size as the hard-target ones whatever the temperature.
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
    hard = F.cross_entropy(student_logits.float(), labels)
    return alpha * soft + (1.0 - alpha) * hard


class TeacherEnsemble(nn.Module):
    """One or more frozen teachers whose temperature-softened predictions are averaged.

    ``combine='probs'`` averages probabilities (the paper's ensemble); ``'logits'`` averages logits
    and softens the mean. Each teacher may take its own input size: ``input_sizes`` resizes the
    (already augmented) student batch for that teacher, so a 224-pixel teacher can teach a 32-pixel
    student on the same images.
    """

    def __init__(self, teachers: Sequence[nn.Module], combine: str = "probs",
                 input_sizes: Sequence[int | None] | None = None) -> None:
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
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> TeacherEnsemble:
        """Teachers stay in eval mode (frozen BatchNorm statistics) even inside a training model."""
        return super().train(False)

    def _inputs(self, x: torch.Tensor, size: int | None) -> torch.Tensor:
        if size is None or tuple(x.shape[-2:]) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """The ensemble's probabilities at ``temperature``."""
        logits = [t(self._inputs(x, s)).float() for t, s in zip(self.teachers, self.input_sizes, strict=True)]
        if self.combine == "logits":
            return F.softmax(torch.stack(logits).mean(0) / temperature, dim=1)
        return torch.stack([F.softmax(z / temperature, dim=1) for z in logits]).mean(0)


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


def kmeans(points: torch.Tensor, k: int, seed: int = 0, iters: int = 100) -> torch.Tensor:
    """Cluster the rows of ``points`` into ``k`` groups (k-means++ start, Lloyd iterations); returns labels."""
    n = points.shape[0]
    if not 1 <= k <= n:
        raise LightnetsError(f"number of groups must be between 1 and {n}, got {k}")
    gen = torch.Generator().manual_seed(seed)
    centres = [points[torch.randint(n, (1,), generator=gen).item()]]
    for _ in range(1, k):
        dist = torch.cdist(points, torch.stack(centres)).min(1).values.square()
        weights = dist if dist.sum() > 0 else torch.ones(n)
        centres.append(points[torch.multinomial(weights, 1, generator=gen).item()])
    centre_t = torch.stack(centres)
    labels = torch.cdist(points, centre_t).argmin(1)
    for _ in range(iters):
        for j in range(k):
            members = points[labels == j]
            if len(members):
                centre_t[j] = members.mean(0)
        new = torch.cdist(points, centre_t).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def group_confused_classes(probs: torch.Tensor, num_groups: int, seed: int = 0) -> list[list[int]]:
    """Groups of classes the generalist confuses: k-means on the columns of its prediction covariance.

    Returns the groups with at least two classes (a specialist for one class would learn nothing the
    generalist does not know), each sorted, largest first.
    """
    cov = prediction_covariance(probs)
    labels = kmeans(cov, num_groups, seed)
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
