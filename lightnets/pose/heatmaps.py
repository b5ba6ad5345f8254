"""Heat-map targets, CPM's loss and decoding for keypoint models (Wei et al. 2016), batched on the keypoints' device.

Coordinates are continuous, as in the detection boxes and the on-device augmentation (``affine_grid`` with
``align_corners=False``): an image of width ``W`` spans ``[0, W]``, input pixel ``i`` covers ``[i, i + 1)`` and its
centre is ``i + 0.5``. Output pixel ``j`` of a map at stride ``s`` covers input ``[j s, (j + 1) s)``; its centre is
``(j + 0.5) s``. A keypoint at ``x`` is a Gaussian centred at output position ``x / s - 0.5`` (in output-pixel
indices), and :func:`decode_heatmaps` maps a peak at index ``j + delta`` back to ``(j + delta + 0.5) s``, so decoding
a target gives back its keypoint exactly. A horizontal flip is ``x -> W - x`` and mirrors output pixel ``j`` to
``w - 1 - j``, the same map when ``W = w s``.

    targets, weights = gaussian_heatmaps(keypoints, visible, output_size=(46, 46), stride=8)
    loss, parts = heatmap_loss(model(images), targets, weights)     # every stage supervised
    keypoints, confidence = decode_heatmaps(model(images)[-1], stride=8)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import LightnetsError

# Standard deviation of a target, in output pixels: CPM's 7 input px at stride 8 on 368 px crops is 0.875 output px;
# 1.0 keeps that width at stride 8 (8 input px). At stride 4 the same input-pixel width needs sigma 2.
DEFAULT_SIGMA = 1.0
LOG_FLOOR = 1e-10  # heat-map values are floored here before the log, so a zero or negative neighbour stays finite


def gaussian_heatmaps(keypoints: torch.Tensor, visible: torch.Tensor, output_size: tuple[int, int], stride: int,
                      sigma: float = DEFAULT_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:
    """CPM's targets: ``(targets (B, K + 1, h, w), weights (B, K + 1, 1, 1))`` for ``keypoints`` ``(B, K, 2)`` (x, y
    in input pixels) of which ``visible`` ``(B, K)`` are labelled.

    Joint ``k``'s map is an untruncated Gaussian of std ``sigma`` output pixels with peak 1 at the keypoint (sub-pixel,
    see the module's convention); the last channel is the background, ``1 - max`` over the joints. An unlabelled
    joint's map is all zero and its weight 0, so the loss neither places it nor pushes it to zero; its coordinates
    are never read. The background's weight is 1. A labelled joint outside the map keeps weight 1 and its (partial or
    empty) Gaussian: the model learns it is not in the crop; mark it unlabelled to leave it out instead.
    """
    if keypoints.ndim != 3 or not keypoints.shape[1] or keypoints.shape[2] != 2 or visible.shape != keypoints.shape[:2]:
        raise LightnetsError(f"keypoints must be (B, K, 2), K >= 1, with visible (B, K), got "
                             f"{tuple(keypoints.shape)} and {tuple(visible.shape)}")
    if sigma <= 0:
        raise LightnetsError(f"sigma must be > 0 output pixels, got {sigma!r}")
    height, width = output_size
    visible = visible.bool()
    # Unlabelled coordinates may be anything (even NaN): replace them before they reach the arithmetic.
    centre = torch.where(visible.unsqueeze(-1), keypoints.float(), 0.0) / stride - 0.5
    xs = torch.arange(width, device=keypoints.device, dtype=torch.float32)
    ys = torch.arange(height, device=keypoints.device, dtype=torch.float32)
    # Separable: the (h, w) Gaussian is the outer product of one row and one column per joint.
    gx = torch.exp(-(xs - centre[..., :1]) ** 2 / (2 * sigma * sigma))  # (B, K, w)
    gy = torch.exp(-(ys - centre[..., 1:]) ** 2 / (2 * sigma * sigma))  # (B, K, h)
    joints = gy.unsqueeze(-1) * gx.unsqueeze(-2) * visible[..., None, None]
    background = 1 - joints.amax(dim=1, keepdim=True)
    weights = torch.cat([visible.float(), torch.ones_like(visible[:, :1], dtype=torch.float32)], dim=1)
    return torch.cat([joints, background], dim=1), weights[..., None, None]


def heatmap_loss(outputs: Sequence[torch.Tensor], targets: torch.Tensor, weights: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CPM's intermediate supervision: the sum over stages of each stage's weighted mean squared error.

    Each stage's error is averaged over the weighted map pixels (labelled joints and the background), so a batch
    with many unlabelled joints is not scored lower for it. Computed in float32, also under autocast. Returns the
    total and each stage's detached error as ``stage1`` .. ``stageT``.
    """
    targets, weights = targets.float(), weights.float()
    count = weights.expand_as(targets).sum().clamp(min=1)
    total = torch.zeros((), device=targets.device)
    parts: dict[str, torch.Tensor] = {}
    for i, output in enumerate(outputs, start=1):
        error = ((output.float() - targets) ** 2 * weights).sum() / count
        total = total + error
        parts[f"stage{i}"] = error.detach()
    return total, parts


def _vertex(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The offset in ``[-0.5, 0.5]`` of the vertex of the parabola through three log values at -1, 0, +1 around a
    maximum; 0 where the three are level."""
    rise_left, rise_right = centre - left, centre - right
    spread = rise_left + rise_right
    return torch.where(spread > 0, (rise_left - rise_right) / (2 * spread).clamp(min=1e-12), torch.zeros_like(spread))


def decode_heatmaps(heatmaps: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keypoints (B, K, 2) input px, confidence (B, K))`` from ``(B, K + 1, h, w)`` maps (the last channel, the
    background, is ignored): each joint's highest pixel, refined to sub-pixel by a parabola through the log of the
    peak and its two neighbours along each axis.

    The log of a Gaussian is a parabola, so this recovers a Gaussian target's centre exactly (DARK, Zhang et al.
    2020, without its smoothing); Hourglass's quarter-pixel step toward the higher neighbour would be off by up to
    a quarter output pixel (2 input px at stride 8). A peak on the map's border is not refined along that axis.
    The confidence is the peak's value.
    """
    if heatmaps.ndim != 4 or heatmaps.shape[1] < 2:
        raise LightnetsError(f"heatmaps must be (B, K + 1, h, w) with K >= 1, got {tuple(heatmaps.shape)}")
    maps = heatmaps[:, :-1].float()
    batch, joints, height, width = maps.shape
    flat = maps.reshape(batch, joints, -1)
    confidence, index = flat.max(dim=-1)
    x, y = index % width, torch.div(index, width, rounding_mode="floor")
    logs = flat.clamp(min=LOG_FLOOR).log()

    def at(dx: int, dy: int) -> torch.Tensor:
        px, py = (x + dx).clamp(0, width - 1), (y + dy).clamp(0, height - 1)
        return logs.gather(-1, (py * width + px).unsqueeze(-1)).squeeze(-1)

    centre = at(0, 0)
    dx = torch.where((x > 0) & (x < width - 1), _vertex(at(-1, 0), centre, at(1, 0)), torch.zeros_like(centre))
    dy = torch.where((y > 0) & (y < height - 1), _vertex(at(0, -1), centre, at(0, 1)), torch.zeros_like(centre))
    keypoints = torch.stack([x + dx + 0.5, y + dy + 0.5], dim=-1) * stride
    return keypoints, confidence


def _permutation(flip_perm: Sequence[int], joints: int) -> list[int]:
    perm = [int(i) for i in flip_perm]
    if sorted(perm) != list(range(joints)):
        raise LightnetsError(f"flip_perm must be a permutation of 0..{joints - 1} (one entry per joint), got {perm}")
    return perm


def flip_heatmaps(heatmaps: torch.Tensor, flip_perm: Sequence[int]) -> torch.Tensor:
    """The maps of the mirrored image, ``(B, C, h, w)``: mirrored along the width and each left joint's channel
    swapped with its right twin's (``flip_perm``, as ``flip_permutation`` gives; the background stays). Averaging a
    model's maps of an image with this of its mirror's is flip test-time augmentation."""
    joints, channels = len(flip_perm), heatmaps.shape[1]
    if channels not in (joints, joints + 1):
        raise LightnetsError(f"{len(flip_perm)} joints in flip_perm need heatmaps with {joints} or {joints + 1} "
                             f"(with the background) channels, got {channels}")
    return heatmaps.flip(-1)[:, _permutation(flip_perm, joints) + list(range(joints, channels))]


def flip_keypoints(keypoints: torch.Tensor, visible: torch.Tensor, width: float | torch.Tensor,
                   flip_perm: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The labels of horizontally mirrored images: ``x -> width - x`` (``width`` a number or ``(B,)`` per image)
    and left and right joints swapped (``flip_perm``), so a mirrored person keeps person-centric labels."""
    perm = _permutation(flip_perm, keypoints.shape[1])
    width = torch.as_tensor(width, dtype=keypoints.dtype, device=keypoints.device).reshape(-1, 1)
    mirrored = torch.stack([width - keypoints[..., 0], keypoints[..., 1]], dim=-1)
    return mirrored[:, perm], visible[:, perm]


def unzoom_heatmaps(heatmaps: torch.Tensor, zoom: float) -> torch.Tensor:
    """Maps ``(B, C, h, w)`` of a crop magnified ``zoom`` times about its centre, resampled (bilinear) into the
    frame of the crop at scale 1, so that maps of several zooms can be averaged (multi-scale testing). Where the
    magnified crop did not reach, the maps are 0."""
    if zoom <= 0:
        raise LightnetsError(f"a test zoom must be > 0, got {zoom!r}")
    theta = torch.zeros(len(heatmaps), 2, 3, dtype=heatmaps.dtype, device=heatmaps.device)
    theta[:, 0, 0] = theta[:, 1, 1] = zoom
    grid = torch.nn.functional.affine_grid(theta, list(heatmaps.shape), align_corners=False)
    return torch.nn.functional.grid_sample(heatmaps, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)
