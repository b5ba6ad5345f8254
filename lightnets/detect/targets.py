"""Training targets: a Gaussian splat per object center, and size/offset regression targets at the centers."""

from __future__ import annotations

import torch


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's size-adaptive splat radius for boxes of ``height x width`` output pixels:
    ``r = sqrt(t^2 s^2 + 4 t (1 - t) h w) - t s``, with ``s = h + w`` and ``t = min_overlap``.

    CornerNet defines the radius as the largest corner shift that keeps IoU >= t over three cases (corners
    moved in, out, or one of each) and CenterNet reuses it with t = 0.7. The reference code solves those
    quadratics as ``(b + sqrt(b^2 - 4ac)) / 2``; the case with both corners moved outwards is then always the
    smallest and reduces to this closed form (4t times that case's exact root). We keep the reference's values,
    which the published CenterNet results were trained with: the exact roots would give every object under
    about 12 output pixels a single-pixel target, which trains small objects such as characters poorly.
    """
    h, w, t = height.float(), width.float(), min_overlap
    s = h + w
    return torch.sqrt(t * t * s * s + 4 * t * (1 - t) * h * w) - t * s


def build_targets(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    batch_index: torch.Tensor,
    *,
    batch_size: int,
    num_classes: int,
    output_size: tuple[int, int],
    stride: int,
    min_overlap: float = 0.7,
    ignore_boxes: torch.Tensor | None = None,
    ignore_index: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Dense CenterNet targets for a batch, built on the boxes' device in one pass (no per-box Python loop).

    ``boxes`` are ``(M, 4)`` ``x1, y1, x2, y2`` in input pixels, ``labels`` ``(M,)`` class indices and
    ``batch_index`` ``(M,)`` the image of each box. Returns ``heatmap`` ``(B, C, H, W)`` (exactly 1 at each
    center, a Gaussian of standard deviation ``(2r + 1) / 6`` around it, the maximum where splats overlap),
    ``size`` and ``offset`` ``(B, 2, H, W)`` (width/height and the center's fractional part, in output pixels)
    and ``mask`` ``(B, 1, H, W)``, 1 at centers. Two objects on one center pixel keep one's size and offset.

    ``ignore_boxes`` ``(N, 4)`` of images ``ignore_index`` (SNIPER's boxes outside a chip's valid range) are
    neither objects nor background: ``weight`` ``(B, 1, H, W)`` is 0 over the output pixels they touch (except at
    object centers) and 1 elsewhere, for the heatmap loss to leave them out.
    """
    height, width = output_size
    device = boxes.device
    heatmap = torch.zeros(batch_size, num_classes, height, width, device=device)
    size = torch.zeros(batch_size, 2, height, width, device=device)
    offset = torch.zeros(batch_size, 2, height, width, device=device)
    mask = torch.zeros(batch_size, 1, height, width, device=device)
    weight = ignored_weight(ignore_boxes, ignore_index, batch_size, output_size, stride, device)
    if boxes.numel() == 0:
        return {"heatmap": heatmap, "size": size, "offset": offset, "mask": mask, "weight": weight}

    boxes = boxes.float() / stride
    box_size = boxes[:, 2:] - boxes[:, :2]
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    peak = center.floor().long()
    peak[:, 0].clamp_(0, width - 1)
    peak[:, 1].clamp_(0, height - 1)
    radius = gaussian_radius(box_size[:, 1].ceil(), box_size[:, 0].ceil(), min_overlap).floor().clamp(min=0).long()

    # Every box's splat on one (2R+1)^2 window, R the largest radius; pixels beyond a box's own radius or
    # outside the map get value 0, which the max leaves without effect.
    reach = int(radius.max())
    steps = torch.arange(-reach, reach + 1, device=device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)
    sigma = (2 * radius + 1).float().unsqueeze(1) / 6
    value = torch.exp(-(dx * dx + dy * dy).float() / (2 * sigma * sigma))
    x, y = peak[:, :1] + dx, peak[:, 1:] + dy
    r = radius.unsqueeze(1)
    keep = (dx.abs() <= r) & (dy.abs() <= r) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    value = torch.where(keep, value, torch.zeros_like(value))
    plane = (batch_index.long() * num_classes + labels.long()).unsqueeze(1)
    flat = (plane * height + y.clamp(0, height - 1)) * width + x.clamp(0, width - 1)
    heatmap.view(-1).scatter_reduce_(0, flat.reshape(-1), value.reshape(-1), reduce="amax")

    b, px, py = batch_index.long(), peak[:, 0], peak[:, 1]
    size[b, :, py, px] = box_size
    offset[b, :, py, px] = center - peak.float()
    mask[b, 0, py, px] = 1.0
    weight = torch.maximum(weight, mask)  # an object's center is never ignored
    return {"heatmap": heatmap, "size": size, "offset": offset, "mask": mask, "weight": weight}


def ignored_weight(boxes: torch.Tensor | None, index: torch.Tensor | None, batch_size: int,
                   output_size: tuple[int, int], stride: int, device: torch.device) -> torch.Tensor:
    """``(B, 1, H, W)``: 0 over the output pixels each ignored box (input px) touches in its image, 1 elsewhere."""
    height, width = output_size
    weight = torch.ones(batch_size, 1, height, width, device=device)
    if boxes is None or index is None or not len(boxes):
        return weight
    cells = boxes.float() / stride
    xs = torch.arange(width, device=device).view(1, 1, -1)
    ys = torch.arange(height, device=device).view(1, -1, 1)
    # Pixel j spans [j, j + 1): it is touched when that span meets (x1, x2).
    touched = ((xs + 1 > cells[:, 0, None, None]) & (xs < cells[:, 2, None, None]) &
               (ys + 1 > cells[:, 1, None, None]) & (ys < cells[:, 3, None, None]))
    hits = torch.zeros(batch_size, height, width, device=device).index_add_(0, index.long(), touched.float())
    return (hits == 0).float().unsqueeze(1)
