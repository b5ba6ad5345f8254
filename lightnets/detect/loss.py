"""CenterNet's loss: penalty-reduced focal loss on the heatmap, L1 on size and offset at object centers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise focal loss with negatives near a center down-weighted by ``(1 - target) ** beta``.

    ``-1/N * sum( (1-p)^alpha log p            at centers (target == 1)
                  (1-target)^beta p^alpha log(1-p)  elsewhere )``, N the number of centers (at least 1).
    Computed from logits with log-sigmoid, so it stays finite where the sigmoid saturates. ``weight`` (broadcast
    to the logits; 0 at ignored pixels) scales each pixel's term.
    """
    prob = logits.sigmoid()
    is_center = target.eq(1)
    positive = (1 - prob).pow(alpha) * F.logsigmoid(logits)
    negative = (1 - target).pow(beta) * prob.pow(alpha) * F.logsigmoid(-logits)
    terms = torch.where(is_center, positive, negative)
    total = (terms if weight is None else terms * weight).sum()
    return -total / is_center.sum().clamp(min=1)


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the centers in ``mask`` (per channel, as the reference averages it)."""
    masked = mask.expand_as(prediction)
    return (F.l1_loss(prediction, target, reduction="none") * masked).sum() / masked.sum().clamp(min=1)


def centernet_loss(
    outputs: list[dict[str, torch.Tensor]],
    targets: dict[str, torch.Tensor],
    size_weight: float = 0.1,
    offset_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum over stacks of ``focal + size_weight * L1(size) + offset_weight * L1(offset)``.

    Every stack is supervised with the same targets. Returns the total and its detached parts: ``heatmap``,
    ``size`` and ``offset`` (summed over stacks) and, with several stacks, each stack's total as ``stack{i}``.
    """
    total = torch.zeros((), device=targets["heatmap"].device)
    parts: dict[str, torch.Tensor] = {"heatmap": total.detach(), "size": total.detach(), "offset": total.detach()}
    for i, out in enumerate(outputs):
        heat = focal_loss(out["heatmap"], targets["heatmap"], weight=targets.get("weight"))
        size = masked_l1(out["size"], targets["size"], targets["mask"])
        offset = masked_l1(out["offset"], targets["offset"], targets["mask"])
        stack_total = heat + size_weight * size + offset_weight * offset
        total = total + stack_total
        parts["heatmap"] = parts["heatmap"] + heat.detach()
        parts["size"] = parts["size"] + size.detach()
        parts["offset"] = parts["offset"] + offset.detach()
        if len(outputs) > 1:
            parts[f"stack{i}"] = stack_total.detach()
    return total, parts
