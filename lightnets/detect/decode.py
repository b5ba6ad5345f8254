"""From predicted maps to boxes: heatmap peaks (3x3 max-pool, no NMS), top-K, score threshold, and the
mapping back through the letterbox to the original image's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LightnetsError
from .transforms import to_image_boxes


@dataclass
class Detections:
    """One image's detections: ``boxes`` ``(K, 4)`` ``x1, y1, x2, y2`` pixels, ``scores`` and ``labels`` ``(K,)``,
    sorted by descending score."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.scores)


def decode(
    prediction: dict[str, torch.Tensor],
    *,
    stride: int,
    top_k: int = 100,
    score_threshold: float = 0.05,
    transforms: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
) -> list[Detections]:
    """Boxes from one stage's ``heatmap`` (logits), ``size`` and ``offset`` maps, one :class:`Detections` per image.

    A pixel is a peak when it equals the maximum of its 3x3 neighbourhood; the ``top_k`` highest peaks over all
    classes are kept (raise it to thousands for dense pages), then those scoring at least ``score_threshold``.
    Boxes are in network-input pixels unless ``transforms`` ``(B, 4)`` gives each image's letterbox
    (``sx, sy, px, py``), in which case they are mapped back to the original image and clipped to
    ``image_sizes`` ``(B, 2)`` (width, height) when given.
    """
    if top_k < 1:
        raise LightnetsError(f"top_k must be >= 1, got {top_k!r}")
    heat = prediction["heatmap"].sigmoid()
    batch, classes, height, width = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, index = peaks.reshape(batch, -1).topk(min(top_k, classes * height * width), dim=1)
    labels = index // (height * width)
    pixel = index % (height * width)
    xs, ys = (pixel % width).float(), (pixel // width).float()
    size = prediction["size"].reshape(batch, 2, -1).gather(2, pixel.unsqueeze(1).expand(-1, 2, -1))
    offset = prediction["offset"].reshape(batch, 2, -1).gather(2, pixel.unsqueeze(1).expand(-1, 2, -1))
    cx, cy = (xs + offset[:, 0]) * stride, (ys + offset[:, 1]) * stride
    size = size.clamp(min=0)  # an untrained or confused size head can go negative; a box cannot
    half_w, half_h = size[:, 0] * stride / 2, size[:, 1] * stride / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)

    results = []
    for i in range(batch):
        keep = scores[i] >= score_threshold
        image_boxes = boxes[i][keep]
        if transforms is not None:
            image_boxes = to_image_boxes(image_boxes, transforms[i])
            if image_sizes is not None:
                limit = image_sizes[i].to(image_boxes).repeat(2)
                image_boxes = torch.minimum(image_boxes.clamp(min=0), limit)
        results.append(Detections(image_boxes, scores[i][keep], labels[i][keep]))
    return results
