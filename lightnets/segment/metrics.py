"""Segmentation metrics from one confusion matrix over every labelled pixel: per-class IoU, mIoU, pixel accuracy.

Pixels labelled ``IGNORE`` (void) are left out everywhere. A class that neither occurs in the labels nor is
predicted has no IoU (NaN) and is left out of the mean, as in mmseg and torchvision's references.
"""

from __future__ import annotations

import torch

IGNORE = 255  # the ignore label of every stored mask (void, unlabelled)


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts, rows the true class and columns the predicted one, of the pixels not ``IGNORE``."""
    keep = target != IGNORE
    pairs = target[keep].long() * num_classes + predicted[keep].long()
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def segmentation_metrics(confusion: torch.Tensor, classes: list[str]) -> dict[str, float]:
    """``miou`` (%, over the classes with an IoU), ``pixel_acc`` (%), ``mean_acc`` (%, mean per-class recall) and
    ``iou_<class>`` (%) for each class, from a confusion matrix."""
    confusion = confusion.double()
    hits = confusion.diag()
    labelled, predicted = confusion.sum(1), confusion.sum(0)
    union = labelled + predicted - hits
    iou = torch.where(union > 0, hits / union.clamp(min=1), torch.nan)
    recall = torch.where(labelled > 0, hits / labelled.clamp(min=1), torch.nan)
    total = float(confusion.sum())
    metrics = {"miou": 100 * float(iou.nanmean()) if bool((union > 0).any()) else float("nan"),
               "pixel_acc": 100 * float(hits.sum()) / total if total else float("nan"),
               "mean_acc": 100 * float(recall.nanmean()) if bool((labelled > 0).any()) else float("nan")}
    metrics.update({f"iou_{name}": 100 * float(value) for name, value in zip(classes, iou, strict=True)})
    return metrics
